"""The streaming merge: rows in = rows out, in upload order, for every kind of drift and bad input."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
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
    run_bin,
    write_fragment,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fusou_compaction.engine import (
    CorruptInputError,
    InputFile,
    LocalDirSink,
    MergeTuning,
    compact_bin,
    dictionary_columns,
    schema_fingerprint,
)
from fusou_compaction.synth import Drift, generate_fragments, make_table

SMALL_ROW_GROUPS = MergeTuning(row_group_bytes=64 * 1024, read_ahead_bytes=128 * 1024)


def _assert_rows_preserved_in_order(paths: list[Path], out_dir: Path) -> None:
    expected = [r for p in paths for r in rows_of_input(p)]
    actual = [r for p in output_paths(out_dir) for r in rows_of_output(p)]
    assert len(actual) == len(expected)
    assert actual == expected


def _drift_fragments(tmp_path: Path, table: str, drifts: list[Drift], rows: int = 300) -> list[Path]:
    return [
        write_fragment(tmp_path / "in" / f"f{i:03d}.parquet", make_table(table, rows, seq=i, drift=d))
        for i, d in enumerate(drifts)
    ]


@pytest.mark.parametrize(
    ("table", "drifts"),
    [
        pytest.param("battle", [Drift(), Drift(extra_column=True), Drift()], id="missing-nullable-column"),
        pytest.param("air_battle", [Drift(), Drift(extra_column=True)], id="missing-struct-field"),
        pytest.param("battle", [Drift(), Drift(wide_ints=True)], id="int16-int32-int64-widening"),
        pytest.param("battle", [Drift(null_typed_column=True), Drift()], id="null-typed-column"),
        pytest.param("ship_state", [Drift(dictionary_strings=True), Drift()], id="dictionary-vs-plain"),
        pytest.param(
            "hougeki",
            [Drift(ts_unit="ms", ts_tz=None), Drift(ts_unit="us", ts_tz="Asia/Tokyo"), Drift(ts_tz="UTC")],
            id="timestamp-unit-and-zone",
        ),
        pytest.param("hougeki", [Drift(), Drift(), Drift()], id="nested-lists"),
        pytest.param("battle", [Drift(empty=True), Drift(), Drift(empty=True)], id="empty-fragments"),
    ],
)
def test_drift_keeps_every_row_in_upload_order(tmp_path: Path, table: str, drifts: list[Drift]) -> None:
    # Given fragments of one table written by clients that drift from each other
    paths = _drift_fragments(tmp_path, table, drifts)

    # When they are compacted as one bin, in small row groups so pieces cross row-group borders
    result = run_bin(input_files(paths), tmp_path / "out", tuning=SMALL_ROW_GROUPS)

    # Then one schema group holds everything and DuckDB reads back every row, in upload order
    assert len({o.schema_fingerprint for o in result.outputs}) == 1
    _assert_rows_preserved_in_order(paths, tmp_path / "out")


def test_widened_integer_takes_the_widest_type(tmp_path: Path) -> None:
    # Given cell_id as int16 and exp as int32 in one fragment, int32/int64 in the next
    paths = _drift_fragments(tmp_path, "battle", [Drift(), Drift(wide_ints=True)])

    # When compacted
    run_bin(input_files(paths), tmp_path / "out")

    # Then the output schema holds the widest integers and a big value survives
    schema = pq.read_schema(output_paths(tmp_path / "out")[0])
    assert schema.field("cell_id").type == pa.int32()
    assert schema.field("exp").type == pa.int64()


def test_timestamps_become_utc_instants_at_the_finest_unit(tmp_path: Path) -> None:
    # Given the same instant written as naive ms, Tokyo us and UTC ms
    instant = datetime(2025, 3, 1, 12, 0, 0)
    tables = [
        pa.table({"at": pa.array([instant], pa.timestamp("ms"))}),
        pa.table({"at": pa.array([instant], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", "Asia/Tokyo"))}),
        pa.table({"at": pa.array([instant], pa.timestamp("ms", tz="UTC"))}),
    ]
    paths = [write_fragment(tmp_path / f"f{i}.parquet", t) for i, t in enumerate(tables)]

    # When compacted
    run_bin(input_files(paths), tmp_path / "out")

    # Then all three rows are the same UTC instant in a us, UTC column
    out = output_paths(tmp_path / "out")[0]
    assert pq.read_schema(out).field("at").type == pa.timestamp("us", tz="UTC")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    epochs = con.execute('SELECT epoch_us("at") FROM read_parquet(?)', [str(out)]).fetchall()
    assert {e for (e,) in epochs} == {int((instant - datetime(1970, 1, 1)).total_seconds() * 1_000_000)}


def test_incompatible_column_types_go_to_separate_outputs_without_dropping_rows(tmp_path: Path) -> None:
    # Given a column that is an int in two fragments and a string in the one between them
    tables = [
        pa.table({"k": pa.array([1, 2], pa.int64()), "ship": ["Fubuki", "Kaga"]}),
        pa.table({"k": pa.array(["x", "y", "z"]), "ship": ["Akagi", "Hiei", "Mutsu"]}),
        pa.table({"k": pa.array([3], pa.int16()), "ship": ["Nagato"]}),
    ]
    paths = [write_fragment(tmp_path / f"f{i}.parquet", t) for i, t in enumerate(tables)]

    # When compacted as one bin
    result = run_bin(input_files(paths), tmp_path / "out")

    # Then two outputs: the int group (both int inputs, in order) and the string group
    outs = output_paths(tmp_path / "out")
    assert len(outs) == 2
    assert [o.input_ids for o in result.outputs] == [["in-0000", "in-0002"], ["in-0001"]]
    assert rows_of_output(outs[0]) == rows_of_input(paths[0]) + rows_of_input(paths[2])
    assert rows_of_output(outs[1]) == rows_of_input(paths[1])
    assert len({o.schema_fingerprint for o in result.outputs}) == 2


def test_synthetic_battle_data_with_all_drift_is_preserved(tmp_path: Path) -> None:
    # Given a small synthetic lake with random drift on every table
    paths = generate_fragments(tmp_path / "in", fragments=12, rows_per_fragment=400, seed=7)

    for table in ("battle", "hougeki", "air_battle", "ship_state"):
        table_paths = [p for p in paths if p.parent.name == table]
        # When each table is compacted
        result = run_bin(input_files(table_paths), tmp_path / "out" / table, tuning=SMALL_ROW_GROUPS)
        # Then every row comes back in order, and the engine's counters agree with DuckDB
        _assert_rows_preserved_in_order(table_paths, tmp_path / "out" / table)
        assert result.rows_in == result.rows_out == sum(pq.read_metadata(p).num_rows for p in table_paths)


def test_outputs_are_readable_by_pyarrow_duckdb_and_polars(tmp_path: Path) -> None:
    # Given compacted drifted air_battle fragments (structs, lists, zones)
    paths = generate_fragments(tmp_path / "in", tables=["air_battle"], fragments=8, rows_per_fragment=500)
    result = run_bin(input_files(paths), tmp_path / "out")
    out = output_paths(tmp_path / "out")[0]

    # When three independent readers count rows and sum a nested field
    pa_table = pq.read_table(out)
    ((duck_rows, duck_sum),) = duckdb.sql(f"SELECT count(*), sum(stage1.f_count) FROM read_parquet('{out}')").fetchall()
    pl_df = pl.read_parquet(out)

    # Then they agree with each other and with the inputs
    assert pa_table.num_rows == duck_rows == pl_df.height == result.rows_in
    expected_sum = sum(
        sum(v for v in pq.read_table(p).column("stage1").combine_chunks().field("f_count").to_pylist() if v)
        for p in paths
    )
    assert duck_sum == pl_df["stage1"].struct.field("f_count").sum() == expected_sum


def _encodings(out: Path) -> dict[str, set[str]]:
    md = pq.read_metadata(out)
    found: dict[str, set[str]] = {}
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            column = md.row_group(rg).column(c)
            found.setdefault(column.path_in_schema, set()).update(column.encodings)
    return found


def test_leaves_without_a_dictionary_are_delta_encoded_and_every_reader_decodes_them(tmp_path: Path) -> None:
    # Given ship_state fragments: random 64-bit ship uids and exp (too many distinct values for a
    # dictionary), ship names and hp values (few), snapshot times
    paths = generate_fragments(tmp_path / "in", tables=["ship_state"], fragments=4, rows_per_fragment=3000)
    run_bin(input_files(paths), tmp_path / "out")
    (out,) = output_paths(tmp_path / "out")

    # When the footer's encodings are read, and three readers decode the delta-encoded columns
    encodings = _encodings(out)
    expected = pq.read_table(out, columns=["ship_uid", "exp", "snapshot_at"])
    duck = duckdb.sql(f"SELECT ship_uid, exp FROM read_parquet('{out}')").fetchall()
    polars_df = pl.read_parquet(out, columns=["ship_uid", "exp"])

    # Then ids and times are delta-packed, repeating values use a dictionary, and every reader
    # returns the same values as pyarrow (and as the inputs)
    assert "DELTA_BINARY_PACKED" in encodings["ship_uid"] and "DELTA_BINARY_PACKED" in encodings["exp"]
    assert "DELTA_BINARY_PACKED" in encodings["snapshot_at"]
    assert "RLE_DICTIONARY" in encodings["ship_name"] and "RLE_DICTIONARY" in encodings["nowhp"]
    assert [tuple(r) for r in duck] == list(
        zip(*(expected.column(c).to_pylist() for c in ("ship_uid", "exp")), strict=True)
    )
    assert polars_df["ship_uid"].to_list() == expected.column("ship_uid").to_pylist()
    _assert_rows_preserved_in_order(paths, tmp_path / "out")


def test_uuid_strings_stay_plain_and_map_ids_get_a_dictionary(tmp_path: Path) -> None:
    # Given battle fragments: one uuid per battle (no dictionary) next to map ids (few values)
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=4, rows_per_fragment=3000)
    run_bin(input_files(paths), tmp_path / "out")
    (out,) = output_paths(tmp_path / "out")

    # When the footer's encodings are read and DuckDB and polars read the uuids back
    encodings = _encodings(out)
    ids = pq.read_table(out, columns=["battle_id"]).column(0).to_pylist()
    duck = [r[0] for r in duckdb.sql(f"SELECT battle_id FROM read_parquet('{out}')").fetchall()]

    # Then the uuids are PLAIN (no DELTA_LENGTH_BYTE_ARRAY, which some lake readers refuse), map
    # ids and formations a dictionary, and the readers agree with the inputs
    assert encodings["battle_id"] & {"DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY", "RLE_DICTIONARY"} == set()
    assert "PLAIN" in encodings["battle_id"]
    assert "RLE_DICTIONARY" in encodings["map_id"] and "RLE_DICTIONARY" in encodings["formation"]
    assert duck == ids == pl.read_parquet(out, columns=["battle_id"])["battle_id"].to_list()
    assert ids == [v for p in paths for v in pq.read_table(p, columns=["battle_id"]).column(0).to_pylist()]


@pytest.mark.parametrize("delta_lists", [True, False])
def test_integers_inside_lists_are_delta_packed_unless_tuned_otherwise(tmp_path: Path, delta_lists: bool) -> None:
    # Given battle fragments: hp lists with ~100 distinct values (a dictionary would take them)
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=3, rows_per_fragment=3000)
    tuning = MergeTuning(delta_list_integers=delta_lists)
    run_bin(input_files(paths), tmp_path / "out", tuning=tuning)
    (out,) = output_paths(tmp_path / "out")

    # When the list elements' encodings are read and DuckDB sums every hp in the file
    encodings = _encodings(out)
    ((duck_total,),) = duckdb.sql(f"SELECT sum(list_sum(hp_before)) FROM read_parquet('{out}')").fetchall()

    # Then they are delta-packed by default and dictionary-encoded when tuned so; either way the
    # values are the inputs'
    hp = encodings["hp_before.list.element"]
    assert ("DELTA_BINARY_PACKED" in hp) is delta_lists and ("RLE_DICTIONARY" in hp) is not delta_lists
    expected = sum(pc.sum(pc.list_flatten(pq.read_table(p).column("hp_before"))).as_py() or 0 for p in paths)
    assert duck_total == expected
    _assert_rows_preserved_in_order(paths, tmp_path / "out")


def test_zero_row_fragments_are_consumed_without_an_output(tmp_path: Path) -> None:
    # Given an empty fragment between two with rows, and a bin that is only an empty fragment
    paths = _drift_fragments(tmp_path, "battle", [Drift(), Drift(empty=True), Drift()], rows=50)

    # When compacted
    result = run_bin(input_files(paths), tmp_path / "out")
    only_empty = run_bin(input_files(paths[1:2]), tmp_path / "out-empty")

    # Then the empty one is reported as consumed and belongs to no output; nothing is written for
    # a bin of empties
    assert result.consumed_without_output == ["in-0001"]
    assert result.outputs[0].input_ids == ["in-0000", "in-0002"]
    assert result.rows_out == 100
    assert only_empty.outputs == []
    assert only_empty.consumed_without_output == ["in-0000"]
    assert all_files(tmp_path / "out-empty") == []


def test_a_huge_row_group_is_split_into_bounded_row_groups(tmp_path: Path) -> None:
    # Given a file with one row group of 60k rows, far larger than the configured row-group budget
    big = make_table("ship_state", 60_000, seq=1)
    paths = [
        write_fragment(tmp_path / "a.parquet", make_table("ship_state", 100, seq=0)),
        write_fragment(tmp_path / "big.parquet", big, row_group_size=60_000),
    ]
    assert pq.read_metadata(paths[1]).num_row_groups == 1
    tuning = MergeTuning(row_group_bytes=256 * 1024, read_ahead_bytes=256 * 1024)

    # When compacted
    result = run_bin(input_files(paths), tmp_path / "out", tuning=tuning)

    # Then every row is there in order, and no output row group is anywhere near 60k rows
    _assert_rows_preserved_in_order(paths, tmp_path / "out")
    md = pq.read_metadata(output_paths(tmp_path / "out")[0])
    assert md.num_row_groups > 4
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) < 20_000
    assert result.rows_out == 60_100


def test_outputs_roll_over_near_the_target_size_and_are_named_deterministically(tmp_path: Path) -> None:
    # Given ~2 MB of fragments and a 256 KiB target
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=10, rows_per_fragment=3000)
    tuning = MergeTuning(row_group_bytes=128 * 1024, read_ahead_bytes=256 * 1024)

    # When compacted twice (a retry)
    first = run_bin(input_files(paths), tmp_path / "out", target_file_size=256 * 1024, tuning=tuning)
    second = run_bin(input_files(paths), tmp_path / "out", target_file_size=256 * 1024, tuning=tuning)

    # Then several outputs, none far beyond the target, named part-00000-NNN, and the retry
    # overwrote exactly its own files with identical bytes
    names = [o.name for o in first.outputs]
    assert len(names) > 2
    assert names == [f"part-00000-{n:03d}.parquet" for n in range(len(names))]
    assert [p.name for p in output_paths(tmp_path / "out")] == names
    assert all(o.bytes < 2 * 256 * 1024 for o in first.outputs)
    assert [o.sha256 for o in first.outputs] == [o.sha256 for o in second.outputs]
    _assert_rows_preserved_in_order(paths, tmp_path / "out")


def test_output_metadata_matches_the_file(tmp_path: Path) -> None:
    # Given a compacted bin
    paths = _drift_fragments(tmp_path, "hougeki", [Drift(), Drift()])
    result = run_bin(input_files(paths), tmp_path / "out")

    # Then size, rows, sha256 and fingerprint describe the file on disk
    import hashlib

    (out,) = result.outputs
    data = (tmp_path / "out" / out.name).read_bytes()
    assert out.bytes == len(data)
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert out.rows == pq.read_metadata(tmp_path / "out" / out.name).num_rows
    assert out.schema_fingerprint == schema_fingerprint(pq.read_schema(tmp_path / "out" / out.name))


@pytest.mark.parametrize("how", DAMAGES)
def test_bad_input_raises_corrupt_input_error_naming_it_and_leaves_no_file(tmp_path: Path, how: str) -> None:
    # Given three good fragments and one damaged one in the middle
    paths = _drift_fragments(tmp_path, "battle", [Drift()] * 4, rows=2000)
    bad = paths[2]
    damage(bad, how)
    inputs = [InputFile(id=f"in-{i}", path=str(p), size_bytes=1000, seq=i) for i, p in enumerate(paths)]

    # When compacted with tiny row groups, so an output is already open when the bad one is read
    with pytest.raises(CorruptInputError) as info:
        compact_bin(
            inputs,
            source_fs=pafs.LocalFileSystem(),
            open_output=LocalDirSink(tmp_path / "out"),
            tuning=MergeTuning(row_group_bytes=32 * 1024, read_ahead_bytes=32 * 1024),
        )

    # Then the error names the bad input and no file (final or temporary) is left behind
    assert info.value.input_id == "in-2"
    assert info.value.path == str(bad)
    assert all_files(tmp_path / "out") == []


def test_row_count_mismatch_with_the_catalog_is_corrupt_input(tmp_path: Path) -> None:
    # Given a fragment whose recorded row count differs from its footer
    (path,) = _drift_fragments(tmp_path, "battle", [Drift()], rows=10)
    inp = InputFile(id="frag-x", path=str(path), size_bytes=path.stat().st_size, row_count=11)

    # When compacted, Then the mismatch is reported against that input
    with pytest.raises(CorruptInputError, match="frag-x"):
        run_bin([inp], tmp_path / "out")


class _RecordingSink:
    """open_output that fails on the second output and records what happened to each one."""

    def __init__(self, inner: LocalDirSink) -> None:
        self.inner = inner
        self.events: list[str] = []

    def __call__(self, name: str):  # type: ignore[no-untyped-def]
        writer = self.inner(name)
        events = self.events
        real_write, real_abort = writer.write, writer.abort
        calls = {"n": 0}

        def write(data):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if name.endswith("-001.parquet") and calls["n"] > 3:
                raise OSError("disk full")
            return real_write(data)

        def abort() -> None:
            events.append(f"abort {name}")
            real_abort()

        writer.write = write  # type: ignore[method-assign]
        writer.abort = abort  # type: ignore[method-assign]
        return writer


def test_a_failing_output_aborts_the_open_output_and_propagates(tmp_path: Path) -> None:
    # Given a sink that fails while writing the second output
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=8, rows_per_fragment=3000)
    sink = _RecordingSink(LocalDirSink(tmp_path / "out"))

    # When compacted with a small target so a second output is needed
    with pytest.raises(OSError, match="disk full"):
        compact_bin(
            input_files(paths),
            source_fs=pafs.LocalFileSystem(),
            open_output=sink,
            target_file_size=200 * 1024,
            tuning=MergeTuning(row_group_bytes=64 * 1024, read_ahead_bytes=64 * 1024),
        )

    # Then the failing output was aborted (no partial file under its name), the finished one stays
    assert sink.events == ["abort part-00000-001.parquet"]
    assert [p.name for p in all_files(tmp_path / "out")] == ["part-00000-000.parquet"]


def test_inputs_stream_from_s3_through_the_same_code_path(tmp_path: Path, s3_client, bucket: str, local_aws) -> None:  # type: ignore[no-untyped-def]
    # Given drifted fragments uploaded to S3 (moto's server), read through pyarrow's S3 filesystem
    paths = _drift_fragments(tmp_path, "battle", [Drift(), Drift(extra_column=True), Drift(empty=True)], rows=500)
    inputs = []
    for i, p in enumerate(paths):
        key = f"datasets/d/battle/fragments/{p.name}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
        inputs.append(InputFile(id=f"in-{i}", path=f"{bucket}/{key}", size_bytes=p.stat().st_size, seq=i))
    s3 = pafs.S3FileSystem(
        endpoint_override=local_aws.endpoint_url.removeprefix("http://"),
        scheme="http",
        access_key="test",
        secret_key="test",
        region=local_aws.region,
    )

    # When compacted from S3
    result = compact_bin(inputs, source_fs=s3, open_output=LocalDirSink(tmp_path / "out"))

    # Then the rows are the local files' rows, in order
    _assert_rows_preserved_in_order(paths, tmp_path / "out")
    assert result.consumed_without_output == ["in-2"]


@pytest.mark.parametrize("threads", [1, 3])
def test_output_bytes_do_not_depend_on_how_many_threads_encode(tmp_path: Path, threads: int) -> None:
    # Given drifted fragments and small row groups, so one output is joined from many encoded parts
    paths = generate_fragments(tmp_path / "in", tables=["hougeki"], fragments=6, rows_per_fragment=2000)
    baseline = run_bin(input_files(paths), tmp_path / "base", tuning=MergeTuning(**_small(encode_threads=2)))

    # When the same bin is encoded on a different number of threads
    result = run_bin(input_files(paths), tmp_path / "out", tuning=MergeTuning(**_small(encode_threads=threads)))

    # Then the files are byte-identical (parts are joined in order, never in completion order),
    # hold many row groups, and every row is there in upload order
    assert [o.sha256 for o in result.outputs] == [o.sha256 for o in baseline.outputs]
    (out,) = output_paths(tmp_path / "out")
    assert pq.read_metadata(out).num_row_groups > 3
    _assert_rows_preserved_in_order(paths, tmp_path / "out")


def _small(**extra: int) -> dict[str, int]:
    return {"row_group_bytes": 64 * 1024, "read_ahead_bytes": 128 * 1024, **extra}


def test_joined_row_groups_keep_their_own_statistics(tmp_path: Path) -> None:
    # Given fragments whose battle_at rises from one fragment to the next, and tiny row groups
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=4, rows_per_fragment=1500)
    run_bin(input_files(paths), tmp_path / "out", tuning=MergeTuning(**_small(encode_threads=2)))
    (out,) = output_paths(tmp_path / "out")

    # When each row group's min/max is read from the footer and recomputed from its rows
    pf = pq.ParquetFile(out)
    for i in range(pf.metadata.num_row_groups):
        column = pf.metadata.row_group(i).column(pf.schema_arrow.get_field_index("battle_at"))
        values = pf.read_row_group(i, columns=["battle_at"]).column(0)

        # Then the footer describes that row group (offsets moved with its bytes, stats kept)
        assert column.statistics.min == pc.min(values).as_py()
        assert column.statistics.max == pc.max(values).as_py()
        assert pf.metadata.row_group(i).num_rows == len(values)


def test_only_integers_really_inside_lists_lose_their_dictionary() -> None:
    # Given repeating small ints: in a struct field named "list" (path "s.list.element", like a
    # list's), inside a list of structs, and at the top level
    n = 3000
    table = pa.table(
        {
            "s": pa.StructArray.from_arrays(
                [pa.StructArray.from_arrays([pa.array([i % 7 for i in range(n)])], ["element"])], ["list"]
            ),
            "ls": pa.array([[{"v": i % 5}] for i in range(n)]),
            "top": pa.array([i % 3 for i in range(n)]),
        }
    )

    # When the dictionary columns are chosen with integers in lists left out
    chosen = dictionary_columns(table, 0.1, list_integers=False)

    # Then only the leaf under a real list is left out; the struct field named "list" keeps it
    assert "s.list.element" in chosen and "top" in chosen
    assert "ls.list.element.v" not in chosen
    assert "ls.list.element.v" in dictionary_columns(table, 0.1, list_integers=True)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(min_value=8_000, max_value=70_000),
    # The limits that matter: 16, 10% of a prefix of 8,192, 10% of the 65,536-value sample
    distinct=st.one_of(
        st.sampled_from([1, 16, 17, 800, 1_000, 3_000, 6_000, 6_553, 6_554, 7_000, 8_192, 9_000]),
        st.integers(min_value=1, max_value=70_000),
    ),
    null_every=st.sampled_from([0, 2, 7]),
    late_unique=st.booleans(),
)
def test_dictionary_choice_equals_a_full_count_of_the_sample(
    rows: int, distinct: int, null_every: int, late_unique: bool
) -> None:
    # Given a column whose number of distinct values ranges over the 10% limit of its sample,
    # with or without nulls, and sometimes repeating at first and unique only later (the case
    # where a prefix looks like a dictionary column and the whole sample does not)
    values: list[int | None] = [i % distinct for i in range(rows)]
    if late_unique:
        values = [0] * (rows // 2) + list(range(rows - rows // 2))
    if null_every:
        values = [None if i % null_every == 0 else v for i, v in enumerate(values)]
    table = pa.table({"v": pa.array(values, pa.int64())})

    # When the engine chooses its dictionary columns
    chosen = dictionary_columns(table, 0.1)

    # Then it decides what counting every distinct value of the 65,536-value sample decides
    sample = table.column("v").slice(0, 65_536)
    valid = len(sample) - sample.null_count
    expected = valid == 0 or pc.count_distinct(sample).as_py() <= max(16, 0.1 * valid)
    assert ("v" in chosen) == expected


def test_written_pages_carry_checksums_that_catch_a_flipped_byte(tmp_path: Path) -> None:
    # Given a stitched output of several row groups
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=6, rows_per_fragment=2000)
    run_bin(input_files(paths), tmp_path / "out", tuning=MergeTuning(row_group_bytes=64 * 1024))
    (out,) = output_paths(tmp_path / "out")
    data = bytearray(out.read_bytes())
    md = pq.read_metadata(out)
    assert md.num_row_groups > 1
    assert pq.ParquetFile(pa.BufferReader(bytes(data)), page_checksum_verification=True).read().num_rows == md.num_rows
    # When one byte of the last row group's first column is flipped
    column = md.row_group(md.num_row_groups - 1).column(0)
    first_page = column.dictionary_page_offset or column.data_page_offset
    data[first_page + column.total_compressed_size - 2] ^= 0xFF
    # Then a verifying reader refuses the file instead of returning other values
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        pq.ParquetFile(pa.BufferReader(bytes(data)), page_checksum_verification=True).read()
