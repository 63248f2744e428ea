"""`fusou-compaction compact-files` on odd inputs (issue 17): compacted, or one line naming the
file and the column, a non-zero exit and nothing written; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.odd_parquet import nested_list, nested_struct, rename_in_footer


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from fusou_compaction.cli import main; main()", "compact-files", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _fixed_size_list(folder: Path) -> None:
    for i in range(2):
        _write(folder / f"f{i}.parquet", pa.table({"hp": pa.array([[i, 1], None], pa.list_(pa.int32(), 2))}))


def _duplicate_names(folder: Path) -> None:
    for i in range(2):
        _write(folder / f"f{i}.parquet", pa.Table.from_arrays([pa.array([i, 1]), pa.array([2, 3])], names=["x", "x"]))


@pytest.mark.parametrize("make", [_fixed_size_list, _duplicate_names], ids=["fixed_size_list", "duplicate_names"])
def test_compact_files_compacts_what_used_to_end_in_a_traceback(make: Callable[[Path], None], tmp_path: Path) -> None:
    # Given a table folder of fixed-size lists, or of two columns called "x"
    make(tmp_path / "lake" / "odd")

    # When compact-files runs on it
    proc = _run(str(tmp_path / "lake"), "--output", str(tmp_path / "out"), "--no-progress")

    # Then it succeeds and its summary counts every row in and out
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows_in"] == summary["rows_out"] == 4
    assert sum(pq.read_metadata(p).num_rows for p in (tmp_path / "out").rglob("*.parquet")) == 4


def _not_utf8(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rename_in_footer(pa.table({"id": [1], "cafe": ["a"]}), "cafe", b"caf\xe9"))
    return 'column "caf\\xe9" has a name that is not UTF-8'


def _deep_struct(path: Path) -> str:
    t, v = nested_struct(100)
    _write(path, pa.table({"id": [1], "stats[hp]": pa.array([v], t)}))  # brackets: not rich markup
    return 'column "stats[hp]" is nested 102 Parquet levels deep; pyarrow reads at most 100'


def _deep_list(path: Path) -> str:
    t, v = nested_list(100)
    _write(path, pa.table({"id": [1], "deep": pa.array([v], t)}))
    return 'column "deep" is nested 202 Parquet levels deep; pyarrow reads at most 100'


@pytest.mark.parametrize(
    "make", [_not_utf8, _deep_struct, _deep_list], ids=["name_not_utf8", "struct_100_deep", "list_100_deep"]
)
def test_compact_files_names_the_file_and_column_it_cannot_compact_and_writes_nothing(
    make: Callable[[Path], str], tmp_path: Path
) -> None:
    # Given a lake whose first table is fine and whose second holds one unsupported fragment
    _write(tmp_path / "lake" / "a_good" / "f0.parquet", pa.table({"id": [1, 2]}))
    _write(tmp_path / "lake" / "b_odd" / "f0.parquet", pa.table({"id": [0]}))
    bad = tmp_path / "lake" / "b_odd" / "f1.parquet"
    expected = make(bad)

    # When compact-files runs on the lake
    proc = _run(str(tmp_path / "lake"), "--output", str(tmp_path / "out"), "--no-progress")

    # Then one line on stderr names the file and the column, the exit is non-zero, there is no
    # summary, and the table compacted before it is discarded too
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: input {bad} ({bad}) cannot be compacted: {expected}"]
    assert proc.stdout.strip() == ""
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
