"""compact_bin with the inputs' unified schema given (as the catalog knows it): no footer is read
ahead, the outputs are the ones the usual way gives, and an input that does not fit makes the bin
start over the usual way without leaving anything of the first attempt behind."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from engine_testkit import (
    DAMAGES,
    all_files,
    damage,
    input_files,
    output_paths,
    rows_of_input,
    rows_of_output,
    write_fragment,
)

from fusou_compaction.engine import (
    BinResult,
    CorruptInputError,
    InputFile,
    LocalDirSink,
    MergeTuning,
    compact_bin,
    schema_fingerprint,
    schema_from_base64,
    schema_to_base64,
    unify_known,
    unify_schemas,
)
from fusou_compaction.synth import Drift, generate_fragments, make_table

SMALL = MergeTuning(row_group_bytes=64 * 1024, read_ahead_bytes=128 * 1024)


def _compact(
    inputs: list[InputFile],
    out: Path,
    schema: pa.Schema | None,
    tuning: MergeTuning = SMALL,
    progress: list[str] | None = None,
    target_file_size: int = 128 * 1024 * 1024,
) -> BinResult:
    return compact_bin(
        inputs,
        source_fs=pafs.LocalFileSystem(),
        open_output=LocalDirSink(out),
        tuning=tuning,
        target_file_size=target_file_size,
        schema=schema,
        on_input_read=None if progress is None else (lambda i: progress.append(i.id)),
    )


def _unified(paths: list[Path]) -> pa.Schema:
    """What the catalog would hand over: the unification of the non-empty inputs' schemas."""
    groups = unify_schemas([pq.read_schema(p) for p in paths if pq.read_metadata(p).num_rows > 0])
    assert len(groups) == 1
    return groups[0].schema


def _same_outputs(a: BinResult, b: BinResult) -> None:
    assert [(o.name, o.sha256, o.rows, o.input_ids) for o in a.outputs] == [
        (o.name, o.sha256, o.rows, o.input_ids) for o in b.outputs
    ]
    assert (a.rows_in, a.bytes_in, a.files_in) == (b.rows_in, b.bytes_in, b.files_in)
    assert a.consumed_without_output == b.consumed_without_output


def _fragments(tmp_path: Path, table: str, drifts: list[Drift], rows: int = 400) -> list[Path]:
    return [
        write_fragment(tmp_path / "in" / f"f{i:03d}.parquet", make_table(table, rows, seq=i, drift=d))
        for i, d in enumerate(drifts)
    ]


@pytest.mark.parametrize("table", ["battle", "hougeki", "air_battle", "ship_state"])
def test_a_fitting_schema_gives_the_same_bytes_as_reading_footers_first(tmp_path: Path, table: str) -> None:
    # Given synthetic fragments with every kind of drift (widening, zones, units, dictionaries,
    # missing columns and struct fields, null-typed columns, empty fragments)
    paths = generate_fragments(tmp_path / "in", tables=[table], fragments=24, rows_per_fragment=900)
    schema = _unified(paths)

    # When compacted the usual way and with their unified schema given
    usual = _compact(input_files(paths), tmp_path / "usual", None)
    progress: list[str] = []
    known = _compact(input_files(paths), tmp_path / "known", schema, progress=progress)

    # Then the outputs are byte for byte the same, nothing fell back, every input was reported
    # once in upload order, and an independent reader finds every input row in order
    _same_outputs(known, usual)
    assert not known.known_schema_missed
    assert progress == [i.id for i in input_files(paths)]
    expected = [r for p in paths for r in rows_of_input(p)]
    assert [r for p in output_paths(tmp_path / "known") for r in rows_of_output(p)] == expected


def test_empty_inputs_are_consumed_without_an_output(tmp_path: Path) -> None:
    # Given empty fragments around one with rows, and a bin of nothing but an empty fragment
    paths = _fragments(tmp_path, "battle", [Drift(empty=True), Drift(), Drift(empty=True)])
    schema = _unified(paths)

    # When compacted with the schema given
    result = _compact(input_files(paths), tmp_path / "out", schema)
    only_empty = _compact(input_files(paths[:1]), tmp_path / "out-empty", schema)

    # Then the empty ones are consumed, belong to no output, and a bin of empties writes nothing
    assert result.consumed_without_output == ["in-0000", "in-0002"]
    assert result.outputs[0].input_ids == ["in-0001"]
    assert result.rows_in == result.rows_out == 400
    assert only_empty.outputs == [] and only_empty.consumed_without_output == ["in-0000"]
    assert all_files(tmp_path / "out-empty") == []


@pytest.mark.parametrize(
    "late",
    [
        pytest.param(Drift(extra_column=True), id="a-column-the-schema-lacks"),
        pytest.param(Drift(wide_ints=True), id="a-wider-integer"),
    ],
)
def test_an_input_that_does_not_fit_makes_the_bin_start_over_the_usual_way(tmp_path: Path, late: Drift) -> None:
    # Given a schema unified from every input but the last, which drifts beyond it (a newer
    # client), and row groups small enough that outputs are open when the last input is read
    paths = _fragments(tmp_path, "battle", [Drift()] * 5 + [late], rows=2000)
    stale = _unified(paths[:-1])
    assert _unified(paths) != stale

    # When compacted with the stale schema, with a small target so several outputs are written
    progress: list[str] = []
    tuning = MergeTuning(row_group_bytes=32 * 1024, read_ahead_bytes=32 * 1024)
    inputs = input_files(paths)
    known = _compact(inputs, tmp_path / "known", stale, tuning, progress, target_file_size=96 * 1024)
    usual = _compact(inputs, tmp_path / "usual", None, tuning, target_file_size=96 * 1024)

    # Then it says so, its outputs are exactly the usual way's (same names, same bytes, nothing
    # else on disk), and progress still names each input once, in order
    assert known.known_schema_missed
    assert len(known.outputs) > 1
    _same_outputs(known, usual)
    assert [p.name for p in all_files(tmp_path / "known")] == [o.name for o in usual.outputs]
    assert progress == [i.id for i in inputs]
    assert [r for p in output_paths(tmp_path / "known") for r in rows_of_output(p)] == [
        r for p in paths for r in rows_of_input(p)
    ]


def test_inputs_that_cannot_be_unified_still_get_their_own_output_group(tmp_path: Path) -> None:
    # Given a fragment whose map_id is an integer where the others have strings
    paths = _fragments(tmp_path, "battle", [Drift(), Drift()])
    table = make_table("battle", 300, seq=9)
    odd = table.set_column(table.schema.get_field_index("map_id"), "map_id", pa.array(range(300), pa.int64()))
    paths.append(write_fragment(tmp_path / "in" / "odd.parquet", odd))

    # When compacted with the schema of the string group
    result = _compact(input_files(paths), tmp_path / "out", _unified(paths[:2]))

    # Then the bin fell back and wrote two schema groups, no row lost
    assert result.known_schema_missed
    assert len({o.schema_fingerprint for o in result.outputs}) == 2
    assert result.rows_out == result.rows_in == 2 * 400 + 300


@pytest.mark.parametrize("how", DAMAGES)
def test_a_bad_input_is_named_and_leaves_no_file(tmp_path: Path, how: str) -> None:
    # Given four good fragments, their schema, and then damage to the third
    paths = _fragments(tmp_path, "battle", [Drift()] * 4, rows=2000)
    schema = _unified(paths)
    damage(paths[2], how)
    inputs = [InputFile(id=f"in-{i}", path=str(p), size_bytes=1000, seq=i) for i, p in enumerate(paths)]

    # When compacted with the schema given and tiny row groups (an output is open by then)
    with pytest.raises(CorruptInputError) as info:
        _compact(inputs, tmp_path / "out", schema, MergeTuning(row_group_bytes=32 * 1024, read_ahead_bytes=32 * 1024))

    # Then the error names the bad input (no fallback hides it) and nothing is left behind
    assert info.value.input_id == "in-2"
    assert all_files(tmp_path / "out") == []


def test_row_count_mismatch_with_the_catalog_is_corrupt_input(tmp_path: Path) -> None:
    # Given a fragment whose recorded row count differs from its footer
    (path,) = _fragments(tmp_path, "battle", [Drift()], rows=10)
    inp = InputFile(id="frag-x", path=str(path), size_bytes=path.stat().st_size, row_count=11)

    # When compacted with its schema given, Then the mismatch is reported against that input
    with pytest.raises(CorruptInputError, match="frag-x"):
        _compact([inp], tmp_path / "out", pq.read_schema(path))


def test_inputs_too_big_to_read_whole_are_read_by_row_group(tmp_path: Path) -> None:
    # Given a small fragment and a big one of many row groups, and a budget that cannot hold the
    # big one whole
    big = make_table("ship_state", 40_000, seq=1)
    paths = [
        write_fragment(tmp_path / "a.parquet", make_table("ship_state", 100, seq=0)),
        write_fragment(tmp_path / "big.parquet", big, row_group_size=5_000),
        write_fragment(tmp_path / "one-group.parquet", make_table("ship_state", 30_000, seq=2), row_group_size=30_000),
    ]
    tuning = MergeTuning(row_group_bytes=256 * 1024, read_ahead_bytes=256 * 1024, whole_file_max_bytes=64 * 1024)
    schema = _unified(paths)

    # When compacted with the schema given, and the usual way
    known = _compact(input_files(paths), tmp_path / "known", schema, tuning)
    usual = _compact(input_files(paths), tmp_path / "usual", None, tuning)

    # Then the same bytes, and no output row group is anywhere near the 30k-row input group
    _same_outputs(known, usual)
    md = pq.read_metadata(output_paths(tmp_path / "known")[0])
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) < 20_000
    assert known.rows_out == 70_100


def test_a_schema_in_another_encoding_or_with_metadata_gives_the_same_bytes(tmp_path: Path) -> None:
    # Given the unified schema spelt with dictionary strings, large lists and metadata (as a
    # catalog record of one fragment's schema may be)
    paths = _fragments(tmp_path, "hougeki", [Drift(), Drift(dictionary_strings=True)])
    schema = _unified(paths)
    spelt = pa.schema(
        [
            pa.field(
                f.name,
                pa.dictionary(pa.int32(), f.type) if pa.types.is_string(f.type) else f.type,
                f.nullable,
                metadata={"origin": "client"},
            )
            for f in schema
        ],
        metadata={"writer": "fusou 1.2"},
    )

    # When compacted with it, Then the outputs are the usual way's, byte for byte
    known = _compact(input_files(paths), tmp_path / "known", spelt)
    assert not known.known_schema_missed
    _same_outputs(known, _compact(input_files(paths), tmp_path / "usual", None))


def test_a_schema_with_duplicate_names_is_ignored(tmp_path: Path) -> None:
    # Given a schema no input can be matched against by name
    paths = _fragments(tmp_path, "battle", [Drift(), Drift()])
    dup = pa.schema([("x", pa.int32()), ("x", pa.int64())])

    # When compacted with it, Then the bin is done the usual way, from the footers
    result = _compact(input_files(paths), tmp_path / "out", dup)
    _same_outputs(result, _compact(input_files(paths), tmp_path / "usual", None))
    assert not result.known_schema_missed


def test_unifying_each_known_schema_once_gives_what_unifying_every_footer_gives(tmp_path: Path) -> None:
    # Given drifted fragments of every table, and what the catalog records: one schema per
    # fingerprint (the first seen), and each input's fingerprint in upload order
    for table in ["battle", "hougeki", "air_battle", "ship_state"]:
        paths = generate_fragments(tmp_path / table, tables=[table], fragments=40, rows_per_fragment=50)
        nonempty = [p for p in paths if pq.read_metadata(p).num_rows > 0]
        schemas = [pq.read_schema(p) for p in nonempty]
        fingerprints = [schema_fingerprint(s) for s in schemas]
        recorded = {}
        for fp, s in zip(fingerprints, schemas, strict=True):
            recorded.setdefault(fp, schema_from_base64(schema_to_base64(s)))
        assert len(recorded) > 3  # drift gives several schemas

        # When the Compact step's unification runs on the records
        known = unify_known(fingerprints, recorded)

        # Then it is the schema phase 1 would find from every footer
        (group,) = unify_schemas(schemas)
        assert known is not None and known.equals(group.schema)
        # and an unknown fingerprint, or schemas that do not unify, give no schema at all
        assert unify_known([*fingerprints, "0" * 64], recorded) is None
    odd = pa.schema([("battle_id", pa.int64())])
    battle = pa.schema([("battle_id", pa.string())])
    assert unify_known(["a", "b"], {"a": battle, "b": odd}) is None
