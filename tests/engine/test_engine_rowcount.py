"""Rows are counted from row groups and checked against what is decoded, never taken from a
footer's file-level count alone: a file whose counts disagree is compacted with every row it holds
or refused with the reason, never dropped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from engine_testkit import all_files, input_files, output_paths, rows_of_input, rows_of_output, run_bin
from tests.forged_parquet import battle_rows, parquet_bytes, rewrite_counts, rust_zero_count_parquet, write

from fusou_compaction.engine import BinResult, CorruptInputError, MergeTuning, compact_bin
from fusou_compaction.engine.rowcount import RowCountMismatch, check_decoded, count_rows
from fusou_compaction.engine.sinks import LocalDirSink

# How the engine can read an input: whole, row group by row group, or a row group in slices.
READ_MODES = {
    "whole": MergeTuning(),
    "by-row-group": MergeTuning(whole_file_max_bytes=0),
    "in-slices": MergeTuning(whole_file_max_bytes=0, row_group_bytes=1, read_ahead_bytes=1),
}


def _compact(paths: list[Path], out: Path, tuning: MergeTuning, *, known: bool) -> BinResult:
    return compact_bin(
        input_files(paths),
        source_fs=pafs.LocalFileSystem(),
        open_output=LocalDirSink(out),
        tuning=tuning,
        schema=pq.read_schema(paths[0]) if known else None,
    )


@pytest.mark.parametrize("known", [False, True], ids=["footers-first", "schema-given"])
@pytest.mark.parametrize("mode", sorted(READ_MODES))
def test_a_file_whose_file_level_count_says_zero_keeps_every_row(tmp_path: Path, mode: str, known: bool) -> None:
    # Given three copies of a fragment as the early Rust writer left it: num_rows 0, 6 rows inside
    paths = [write(tmp_path / "in" / f"f{i}.parquet", rust_zero_count_parquet(6, start=10 * i)) for i in range(3)]
    assert pq.read_metadata(paths[0]).num_rows == 0

    # When they are compacted
    result = _compact(paths, tmp_path / "out", READ_MODES[mode], known=known)

    # Then all 18 rows are counted in and written out, in order, as DuckDB reads them back
    assert (result.rows_in, result.rows_out) == (18, 18)
    assert result.consumed_without_output == []
    expected = [r for p in paths for r in rows_of_input(p)]
    assert len(expected) == 18
    assert [r for p in output_paths(tmp_path / "out") for r in rows_of_output(p)] == expected


def test_several_row_groups_are_summed_whatever_the_file_level_count(tmp_path: Path) -> None:
    # Given a file of three row groups (2 rows each) whose file-level count says 1,000,000
    data = rewrite_counts(parquet_bytes(battle_rows(6), row_group_size=2), file_rows=1_000_000)
    path = write(tmp_path / "a.parquet", data)
    # When counted, Then the row groups decide
    rows = count_rows(pq.read_metadata(path))
    assert (rows.total, rows.row_groups, rows.file_level, rows.file_level_disagrees) == (6, (2, 2, 2), 1_000_000, True)
    # And compaction writes exactly those 6 rows
    assert run_bin(input_files([path]), tmp_path / "out").rows_out == 6


@pytest.mark.parametrize("known", [False, True], ids=["footers-first", "schema-given"])
def test_a_row_group_that_says_fewer_rows_than_its_columns_hold_is_refused(tmp_path: Path, known: bool) -> None:
    # Given a row group that says 2 rows while its columns hold 6 values each (pyarrow would
    # silently read 2 rows; DuckDB refuses the file)
    good = write(tmp_path / "in" / "good.parquet", parquet_bytes(battle_rows(4)))
    bad = write(tmp_path / "in" / "bad.parquet", rewrite_counts(parquet_bytes(battle_rows(6)), row_group_rows={0: 2}))
    assert pq.read_table(bad).num_rows == 2  # what trusting the count would have kept

    # When compacted, Then the bin fails naming the input and why, and leaves no file
    with pytest.raises(CorruptInputError) as info:
        _compact([good, bad], tmp_path / "out", MergeTuning(), known=known)
    assert info.value.input_id == "in-0001"
    assert "row group 0 says it holds 2 rows but column 'battle_id' holds 6 values" in info.value.reason
    assert all_files(tmp_path / "out") == []


@pytest.mark.parametrize("known", [False, True], ids=["footers-first", "schema-given"])
@pytest.mark.parametrize("mode", sorted(READ_MODES))
def test_a_footer_that_promises_more_rows_than_decode_is_refused(tmp_path: Path, mode: str, known: bool) -> None:
    # Given a file whose whole footer agrees on 100 rows (row group and column chunks) but whose
    # pages hold 6: only decoding can tell
    data = rewrite_counts(parquet_bytes(battle_rows(6)), file_rows=100, row_group_rows={0: 100}, column_values={0: 100})
    bad = write(tmp_path / "in" / "bad.parquet", data)
    assert count_rows(pq.read_metadata(bad)).total == 100

    # When compacted, Then it is refused as corrupt, naming the input and the decoded count
    with pytest.raises(CorruptInputError) as info:
        _compact([bad], tmp_path / "out", READ_MODES[mode], known=known)
    assert info.value.input_id == "in-0000"
    assert "the footer says 100 rows but 6 were decoded" in info.value.reason
    assert all_files(tmp_path / "out") == []


def test_a_catalog_count_that_differs_from_the_row_groups_is_refused(tmp_path: Path) -> None:
    # Given a Rust-style file (row groups: 6) that a catalog recorded with the file-level count, 0
    path = write(tmp_path / "a.parquet", rust_zero_count_parquet(6))
    inputs = [replace(i, row_count=0) for i in input_files([path])]
    # When compacted, Then the disagreement is named rather than the rows dropped
    with pytest.raises(CorruptInputError, match="row groups hold 6 rows, catalog says 0"):
        run_bin(inputs, tmp_path / "out")


def test_repeated_columns_may_hold_more_values_than_rows() -> None:
    # Given a list column: 6 rows, 12 values, one null list and one empty list
    table = pa.table({"hp": pa.array([[1, 2], [], None, [3], [4, 5, 6], [7]], pa.list_(pa.int32()))})
    md = pq.ParquetFile(pa.BufferReader(parquet_bytes(table))).metadata
    # Then the count is 6, not the leaf's value count
    assert md.row_group(0).column(0).num_values > 6
    assert count_rows(md).total == 6


def test_a_repeated_column_with_fewer_values_than_rows_is_a_mismatch() -> None:
    data = rewrite_counts(parquet_bytes(battle_rows(6)), row_group_rows={0: 7}, column_values={0: 6})
    with pytest.raises(RowCountMismatch, match="says it holds 7 rows"):
        count_rows(pq.ParquetFile(pa.BufferReader(data)).metadata)


def test_check_decoded_passes_only_on_equal_counts() -> None:
    check_decoded(5, 5, "x")
    for decoded in (4, 6):
        with pytest.raises(RowCountMismatch, match=f"x: the footer says 5 rows but {decoded} were decoded"):
            check_decoded(5, decoded, "x")
