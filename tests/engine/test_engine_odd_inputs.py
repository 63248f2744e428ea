"""Odd but valid inputs (issue 17): each one is compacted and read back equal by pyarrow, DuckDB
and polars, or refused with UnsupportedInputError naming the input and the column, before any
output is opened. Never a lost row, never an untyped exception."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from engine_testkit import all_files, input_files, output_paths, run_bin, write_fragment
from tests.odd_parquet import nested_list, nested_struct, rename_in_footer

from fusou_compaction.engine import (
    BinJob,
    LocalDirSink,
    PlannedBin,
    UnsupportedInputError,
    compact_bin,
    compact_bins,
)

FSL2 = pa.list_(pa.int32(), 2)
XY = pa.list_(pa.list_(pa.float64(), 2))
MAP32 = pa.map_(pa.string(), pa.int32())
MAP64 = pa.map_(pa.string(), pa.int64())
T0 = datetime(2026, 1, 2, 3, 4, 5)


def _t(**columns: pa.Array[Any]) -> pa.Table:
    return pa.table(columns)


def _duck(path: Path, select: str = "*") -> duckdb.DuckDBPyRelation:
    relation = duckdb.sql(f"SELECT {select} FROM read_parquet('{path}')")
    assert relation is not None
    return relation


READERS: dict[str, Callable[[Path], pa.Table]] = {
    "pyarrow": pq.read_table,
    "duckdb": lambda p: _duck(p).to_arrow_table(),
    "polars": lambda p: pl.read_parquet(p).to_arrow(),
}


def _as(values: Any, t: pa.DataType) -> pa.Array[Any]:
    """A reader's values in the expected type: its own representation (large_string, time64[us],
    int64 for a duration...) cast, struct fields taken by position (DuckDB renames an empty one)."""
    if pa.types.is_struct(t) and pa.types.is_struct(values.type):
        children = [_as(values.field(i), t.field(i).type) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=values.is_null())
    same: pa.Array[Any] = values if values.type == t else values.cast(t)
    return same


def _assert_reads_back(path: Path, expected: pa.Table, reader: str, table: pa.Table) -> None:
    """Column by column, by position (DuckDB renames an empty column name to C0)."""
    if reader == "pyarrow":  # the Arrow schema is stored in the file: pyarrow gets it exactly
        assert table.schema.equals(expected.schema), (path, table.schema)
    assert (table.num_rows, table.num_columns) == (expected.num_rows, expected.num_columns), reader
    for i, f in enumerate(expected.schema):
        got = _as(table.column(i).combine_chunks(), f.type)
        assert got.equals(expected.column(i).combine_chunks()), (reader, f.name, got)


@dataclass(frozen=True)
class Odd:
    fragments: list[pa.Table]
    outputs: list[pa.Table]  # expected, in output order (one per schema group here)
    input_ids: list[list[str]] = field(default_factory=list)  # per output, when not all inputs


def _wide(columns: int) -> Odd:
    def rows(start: int) -> pa.Table:
        return pa.table({f"c{i:05d}": pa.array([start + i, None], pa.int64()) for i in range(columns)})

    return Odd([rows(0), rows(1)], [pa.concat_tables([rows(0), rows(1)])])


CASES: dict[str, Odd] = {
    # Given fixed-size lists (a column, and inside a list)
    "fixed_size_list": Odd(
        [
            _t(hp=pa.array([[1, 2], None, [3, None]], FSL2), xy=pa.array([[[0.5, 1.5]], None, []], XY)),
            _t(hp=pa.array([[5, 6]], FSL2), xy=pa.array([[[2.0, 3.0], None]], XY)),
        ],
        [
            _t(
                hp=pa.array([[1, 2], None, [3, None], [5, 6]], FSL2),
                xy=pa.array([[[0.5, 1.5]], None, [], [[2.0, 3.0], None]], XY),
            )
        ],
    ),
    # Given an empty column name, and an empty struct field name
    "empty_column_names": Odd(
        [
            _t(**{"": pa.array([1, 2]), "s": pa.array([{"": "a"}, None])}),
            _t(**{"": pa.array([3]), "s": pa.array([{"": "b"}])}),
        ],
        [_t(**{"": pa.array([1, 2, 3]), "s": pa.array([{"": "a"}, None, {"": "b"}])})],
    ),
    # Given maps whose values widen from int32 to int64 between fragments
    "map": Odd(
        [_t(m=pa.array([[("a", 1)], None, []], MAP32)), _t(m=pa.array([[("b", 2), ("c", 2**40)]], MAP64))],
        [_t(m=pa.array([[("a", 1)], None, [], [("b", 2), ("c", 2**40)]], MAP64))],
    ),
    # Given half floats
    "float16": Odd(
        [_t(h=pa.array([1.5, None, -0.25]).cast(pa.float16())), _t(h=pa.array([65504.0]).cast(pa.float16()))],
        [_t(h=pa.array([1.5, None, -0.25, 65504.0]).cast(pa.float16()))],
    ),
    # Given times of day and durations in several units
    "time_and_duration": Odd(
        [
            _t(
                t32=pa.array([1_000, None], pa.time32("ms")),
                t64=pa.array([1, 86_399_999_999], pa.time64("us")),
                t64ns=pa.array([7, None], pa.time64("ns")),
                ds=pa.array([-5, 3_600], pa.duration("s")),
                dns=pa.array([1, None], pa.duration("ns")),
            )
        ]
        * 2,
        [
            _t(
                t32=pa.array([1_000, None] * 2, pa.time32("ms")),
                t64=pa.array([1, 86_399_999_999] * 2, pa.time64("us")),
                t64ns=pa.array([7, None] * 2, pa.time64("ns")),
                ds=pa.array([-5, 3_600] * 2, pa.duration("s")),
                dns=pa.array([1, None] * 2, pa.duration("ns")),
            )
        ],
    ),
    # Given 10,000 columns
    "10000_columns": _wide(10_000),
    # Given decimals up to 38 digits
    "decimal": Odd(
        [
            _t(
                d=pa.array([Decimal("1.23"), None], pa.decimal128(10, 2)),
                w=pa.array([Decimal("12345678901234567890.1234567891"), Decimal("-1")], pa.decimal128(38, 10)),
            )
        ]
        * 2,
        [
            _t(
                d=pa.array([Decimal("1.23"), None] * 2, pa.decimal128(10, 2)),
                w=pa.array([Decimal("12345678901234567890.1234567891"), Decimal("-1")] * 2, pa.decimal128(38, 10)),
            )
        ],
    ),
    # Given large strings, lists and binaries in one fragment, plain ones in the next
    "large_string_and_large_list": Odd(
        [
            _t(
                s=pa.array(["a", None], pa.large_string()),
                l=pa.array([[1, None], []], pa.large_list(pa.int64())),
                b=pa.array([b"\x00", b""], pa.large_binary()),
            ),
            _t(s=pa.array(["b"]), l=pa.array([[2]], pa.list_(pa.int32())), b=pa.array([b"x"])),
        ],
        [
            _t(
                s=pa.array(["a", None, "b"]),
                l=pa.array([[1, None], [], [2]], pa.list_(pa.int64())),
                b=pa.array([b"\x00", b"", b"x"]),
            )
        ],
    ),
    # Given dictionaries of integers, floats, timestamps and decimals, then plain values
    "dictionary_of_non_strings": Odd(
        [
            _t(
                i=pa.array([7, 7, None], pa.int64()).dictionary_encode(),
                f=pa.array([0.5, 0.5, 2.0]).dictionary_encode(),
                ts=pa.array([T0, T0, None], pa.timestamp("ms")).dictionary_encode(),
                d=pa.array([Decimal("1.5")] * 3, pa.decimal128(5, 1)).dictionary_encode(),
            ),
            _t(
                i=pa.array([8], pa.int64()),
                f=pa.array([3.0]),
                ts=pa.array([T0], pa.timestamp("ms")),
                d=pa.array([Decimal("2.5")], pa.decimal128(5, 1)),
            ),
        ],
        [
            _t(
                i=pa.array([7, 7, None, 8], pa.int64()),
                f=pa.array([0.5, 0.5, 2.0, 3.0]),
                ts=pa.array([T0, T0, None, T0], pa.timestamp("ms")),
                d=pa.array([Decimal("1.5")] * 3 + [Decimal("2.5")], pa.decimal128(5, 1)),
            )
        ],
    ),
    # Given a column that is a string in two fragments and a struct in the one between them
    "type_conflict_between_fragments": Odd(
        [_t(c=pa.array(["a", None])), _t(c=pa.array([{"x": 1}, None])), _t(c=pa.array(["b"]))],
        [_t(c=pa.array(["a", None, "b"])), _t(c=pa.array([{"x": 1}, None]))],
        input_ids=[["in-0000", "in-0002"], ["in-0001"]],
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_odd_input_is_compacted_and_read_back_equal_by_pyarrow_duckdb_and_polars(case: Odd, tmp_path: Path) -> None:
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", t) for i, t in enumerate(case.fragments)]

    # When the bin is compacted
    result = run_bin(input_files(paths), tmp_path / "out")

    # Then no row is lost, each schema group has its output, and every reader reads it back equal
    outs = output_paths(tmp_path / "out")
    assert result.rows_in == result.rows_out == sum(t.num_rows for t in case.fragments)
    assert len(outs) == len(case.outputs)
    if case.input_ids:
        assert [o.input_ids for o in result.outputs] == case.input_ids
    for out, expected in zip(outs, case.outputs, strict=True):
        for reader, read in READERS.items():
            _assert_reads_back(out, expected, reader, read(out))


def test_the_deepest_nesting_pyarrow_reads_is_compacted_and_read_back_equal(tmp_path: Path) -> None:
    # Given the deepest struct (98) and list (49) pyarrow reads by default (one more is refused:
    # see the tests below)
    st, sv = nested_struct(98)
    lt, lv = nested_list(49)
    table = _t(s=pa.array([sv, None], st), l=pa.array([None, lv], lt))
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", table) for i in range(2)]

    # When the bin is compacted
    run_bin(input_files(paths), tmp_path / "out")

    # Then pyarrow reads it back equal; DuckDB and polars read it too, but pyarrow imports no
    # more than 64 levels from another library, so their rows are compared as Python values
    (out,) = output_paths(tmp_path / "out")
    expected = pa.concat_tables([table, table])
    _assert_reads_back(out, expected, "pyarrow", pq.read_table(out))
    for reader in ("duckdb", "polars"):
        with pytest.raises(pa.ArrowInvalid, match="Recursion level in ArrowSchema struct exceeded"):
            READERS[reader](out)
    rows = list(zip(expected.column("s").to_pylist(), expected.column("l").to_pylist(), strict=True))
    assert _duck(out, "s, l").fetchall() == rows
    assert pl.read_parquet(out).rows() == rows


def test_fixed_size_list_leaves_get_the_encoding_choices_of_list_leaves(tmp_path: Path) -> None:
    # Given fixed-size lists of ints and of a few repeating names, next to plain lists of the same
    # values (Parquet writes both as lists)
    ints = [[i % 3, i] for i in range(3000)]
    names = [["Kongou", "Hiei"] if i % 2 else ["Haruna", "Kirishima"] for i in range(3000)]
    table = _t(
        hp=pa.array(ints, FSL2),
        hp_list=pa.array(ints, pa.list_(pa.int32())),
        ships=pa.array(names, pa.list_(pa.string(), 2)),
        ships_list=pa.array(names, pa.list_(pa.string())),
    )
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", table) for i in range(2)]

    # When the bin is compacted
    run_bin(input_files(paths), tmp_path / "out")

    # Then each fixed-size list leaf is encoded as its plain list twin is
    (out,) = output_paths(tmp_path / "out")
    group = pq.read_metadata(out).row_group(0)
    encodings = {group.column(c).path_in_schema: group.column(c).encodings for c in range(group.num_columns)}
    assert encodings["hp.list.element"] == encodings["hp_list.list.element"]
    assert encodings["ships.list.element"] == encodings["ships_list.list.element"]
    assert "RLE_DICTIONARY" in encodings["ships.list.element"]


def test_extension_types_arrow_cannot_hash_are_compacted_without_a_dictionary(tmp_path: Path) -> None:
    # Given uuid and json extension columns (pyarrow restores them from the stored Arrow schema;
    # Arrow's count_distinct has no kernel for them)
    table = _t(
        u=pa.array([bytes(range(16)), None, bytes(16)], pa.uuid()),
        j=pa.array(['{"a": 1}', None, "[]"], pa.json_()),
    )
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", table) for i in range(2)]

    # When the bin is compacted
    run_bin(input_files(paths), tmp_path / "out")

    # Then pyarrow reads the extension types back as written, DuckDB and polars their storage
    ((out,),) = [output_paths(tmp_path / "out")]
    expected = pa.concat_tables([table, table])
    _assert_reads_back(out, expected, "pyarrow", pq.read_table(out))
    storage = pa.table([c.combine_chunks().storage for c in expected.columns], names=expected.column_names)  # type: ignore[attr-defined]
    duck = _duck(out, "u::BLOB AS u, j::VARCHAR AS j").to_arrow_table()
    _assert_reads_back(out, storage, "duckdb", duck)
    _assert_reads_back(out, storage, "polars", pl.read_parquet(out).to_arrow())


def test_duplicate_column_names_are_compacted_and_readers_that_match_by_name_say_so(tmp_path: Path) -> None:
    # Given fragments with two columns called "x" (a schema group of their own each: see
    # engine/schema.py unify_schemas)
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array(["a", None])], names=["x", "x"])
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", table) for i in range(2)]

    # When the bin is compacted
    result = run_bin(input_files(paths), tmp_path / "out")

    # Then every row is kept, by position, and readable by pyarrow's file reader
    outs = output_paths(tmp_path / "out")
    assert result.rows_in == result.rows_out == 4
    for out in outs:
        _assert_reads_back(out, table, "pyarrow", pq.ParquetFile(out).read())
        # DuckDB renames the second "x"; pyarrow's dataset reader and polars refuse the name twice
        assert _duck(out).columns == ["x", "x_1"]
        _assert_reads_back(out, table, "duckdb", _duck(out).to_arrow_table())
        with pytest.raises(pa.ArrowInvalid, match=r"Multiple matches for FieldRef.Name\(x\)"):
            pq.read_table(out)
        with pytest.raises(pl.exceptions.DuplicateError, match="column with name 'x' has more than one occurrence"):
            pl.read_parquet(out)


def test_decimal_wider_than_38_digits_is_compacted_and_readers_limited_to_38_say_so(tmp_path: Path) -> None:
    # Given a decimal256 column of 50 digits
    value = Decimal("1234567890123456789012345678901234567890123456789.5")
    table = _t(d=pa.array([value, None], pa.decimal256(50, 1)))
    paths = [write_fragment(tmp_path / "in" / f"f{i}.parquet", table) for i in range(2)]

    # When the bin is compacted
    run_bin(input_files(paths), tmp_path / "out")
    (out,) = output_paths(tmp_path / "out")

    # Then pyarrow reads it back exactly; DuckDB's DECIMAL holds 38 digits at most, so it reads a
    # DOUBLE (its nearest value), and polars refuses the column
    _assert_reads_back(out, pa.concat_tables([table, table]), "pyarrow", pq.read_table(out))
    duck = _duck(out, "d")
    assert duck.types == ["DOUBLE"]
    assert [r[0] for r in duck.fetchall()] == [pytest.approx(float(value), rel=1e-15), None] * 2
    with pytest.raises(pl.exceptions.InvalidOperationError, match="precision must be between 1 and 38, got 50"):
        pl.read_parquet(out)


# --- refused: UnsupportedInputError names the input and the column, and nothing is written ---


def _not_utf8_top_level(tmp_path: Path) -> tuple[Path, str]:
    data = rename_in_footer(_t(id=pa.array([1, 2]), cafe=pa.array(["a", "b"])), "cafe", b"caf\xe9")
    path = tmp_path / "in" / "f1.parquet"
    path.write_bytes(data)
    return path, "caf\\xe9"


def _not_utf8_struct_field(tmp_path: Path) -> tuple[Path, str]:
    table = _t(id=pa.array([1]), ship=pa.array([{"name": "Kongou", "hp": 85}]))
    path = tmp_path / "in" / "f1.parquet"
    path.write_bytes(rename_in_footer(table, "hp", b"\xff\xfe"))
    return path, "ship.\\xff\\xfe"


def _deep_struct(tmp_path: Path) -> tuple[Path, str]:
    t, v = nested_struct(100)
    return write_fragment(tmp_path / "in" / "f1.parquet", _t(id=pa.array([1]), deep=pa.array([v], t))), "deep"


def _deep_list(tmp_path: Path) -> tuple[Path, str]:
    t, v = nested_list(100)
    return write_fragment(tmp_path / "in" / "f1.parquet", _t(id=pa.array([1]), deep=pa.array([v], t))), "deep"


REFUSED: dict[str, tuple[Callable[[Path], tuple[Path, str]], str]] = {
    "name_not_utf8": (_not_utf8_top_level, "has a name that is not UTF-8"),
    "struct_field_name_not_utf8": (_not_utf8_struct_field, "has a name that is not UTF-8"),
    "struct_100_deep": (_deep_struct, "is nested 102 Parquet levels deep; pyarrow reads at most 100"),
    "list_100_deep": (_deep_list, "is nested 202 Parquet levels deep; pyarrow reads at most 100"),
}


def _bin_with(tmp_path: Path, make: Callable[[Path], tuple[Path, str]]) -> tuple[list[Path], str]:
    good = write_fragment(tmp_path / "in" / "f0.parquet", _t(id=pa.array([0])))
    bad, column = make(tmp_path)
    after = write_fragment(tmp_path / "in" / "f2.parquet", _t(id=pa.array([2])))
    return [good, bad, after], column


@pytest.mark.parametrize(("make", "reason"), list(REFUSED.values()), ids=list(REFUSED))
def test_unsupported_input_is_refused_by_compact_bin_naming_input_and_column(
    make: Callable[[Path], tuple[Path, str]], reason: str, tmp_path: Path
) -> None:
    # Given a bin whose second input has an unsupported column between two plain ones
    paths, column = _bin_with(tmp_path, make)

    # When it is compacted
    with pytest.raises(UnsupportedInputError) as caught:
        run_bin(input_files(paths), tmp_path / "out")

    # Then the typed error names the input, its path and the column, and no output is left
    err = caught.value
    assert (err.input_id, err.path, err.column, err.reason) == ("in-0001", str(paths[1]), column, reason)
    assert f'input in-0001 ({paths[1]}) cannot be compacted: column "{column}" {reason}' == str(err)
    assert all_files(tmp_path / "out") == []
    # ... and it survives a process pool or a Step Functions payload
    again = pickle.loads(pickle.dumps(err))  # noqa: S301  (our own bytes)
    assert (type(again), str(again), again.column) == (UnsupportedInputError, str(err), column)


@pytest.mark.parametrize(("make", "reason"), list(REFUSED.values()), ids=list(REFUSED))
def test_unsupported_input_is_refused_under_a_known_schema_too(
    make: Callable[[Path], tuple[Path, str]], reason: str, tmp_path: Path
) -> None:
    # Given the same bin, and the catalog's schema of its plain inputs (no footer read ahead)
    paths, column = _bin_with(tmp_path, make)

    # When it is compacted with that schema through compact_bins
    job = BinJob(
        PlannedBin(0, input_files(paths)), LocalDirSink(tmp_path / "out"), schema=pa.schema([("id", pa.int64())])
    )
    with pytest.raises(UnsupportedInputError) as caught:
        compact_bins([job], source_fs=pafs.LocalFileSystem())

    # Then the misfit sends the bin back to reading footers, which refuses the input by name
    assert (caught.value.input_id, caught.value.column, caught.value.reason) == ("in-0001", column, reason)
    assert all_files(tmp_path / "out") == []


@pytest.mark.parametrize("depth", ["struct_100_deep", "list_100_deep"])
def test_a_known_schema_that_is_itself_too_deep_is_not_trusted(depth: str, tmp_path: Path) -> None:
    # Given a bin of one too-deep input, and a known schema that is that input's own schema
    paths, column = _bin_with(tmp_path, REFUSED[depth][0])
    known = pq.ParquetFile(paths[1], schema_depth_limit=1000).schema_arrow  # type: ignore[call-arg]

    # When it is compacted with that schema
    with pytest.raises(UnsupportedInputError) as caught:
        compact_bin(
            input_files(paths),
            source_fs=pafs.LocalFileSystem(),
            open_output=LocalDirSink(tmp_path / "out"),
            schema=known,
        )

    # Then it is refused as without one (the output would be unreadable to pyarrow)
    assert (caught.value.input_id, caught.value.column) == ("in-0001", column)
    assert all_files(tmp_path / "out") == []


def test_too_deep_input_is_valid_parquet_that_duckdb_and_polars_read(tmp_path: Path) -> None:
    # Given a 100-deep struct written by pyarrow
    path, _ = _deep_struct(tmp_path)

    # When pyarrow (default limit), DuckDB and polars read it
    # Then only pyarrow refuses: the refusal is about pyarrow's readers, not a corrupt file
    with pytest.raises(OSError, match="Parquet schema too deeply nested"):
        pq.read_table(path)
    assert _duck(path, "count(*)").fetchall() == [(1,)]
    assert pl.read_parquet(path).height == 1
