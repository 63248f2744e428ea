"""`fusou-compaction compact-files` on folders: progress on stderr, JSON summary last on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_testkit import all_files, output_paths, rows_of_input, rows_of_output
from tests.forged_parquet import rust_zero_count_parquet, write

from fusou_compaction.cli.compact import parse_size
from fusou_compaction.synth import generate_fragments


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from fusou_compaction.cli import main; main()", "compact-files", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compact_files_on_an_unseen_drifted_lake_agrees_with_duckdb(tmp_path: Path) -> None:
    # Given a lake the engine has never seen: four tables, drift, one folder per table
    paths = generate_fragments(tmp_path / "lake", fragments=10, rows_per_fragment=600, seed=4242)

    # When compact-files runs on the lake folder with a small target
    proc = _run(str(tmp_path / "lake"), "--output", str(tmp_path / "out"), "--target-file-size", "256KiB")

    # Then it succeeds, shows progress on stderr, and its last stdout line is the JSON summary
    assert proc.returncode == 0, proc.stderr
    assert "━" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"files_in", "rows_in", "files_out", "rows_out", "bytes_out"} <= summary.keys()
    assert summary["files_in"] == len(paths)

    # Then DuckDB reads every table's outputs back as exactly its input rows, in order
    total = 0
    for table in ("air_battle", "battle", "hougeki", "ship_state"):
        table_inputs = sorted(p for p in paths if p.parent.name == table)
        expected = [r for p in table_inputs for r in rows_of_input(p)]
        actual = [r for p in output_paths(tmp_path / "out" / table) for r in rows_of_output(p)]
        assert actual == expected
        total += len(actual)
    assert summary["rows_in"] == summary["rows_out"] == total
    assert summary["files_out"] == len(list((tmp_path / "out").rglob("*.parquet")))
    assert summary["bytes_out"] == sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.parquet"))


def test_compact_files_on_a_bad_input_exits_non_zero_and_names_it(tmp_path: Path) -> None:
    # Given a table folder with good fragments and one that is CSV under a .parquet name
    generate_fragments(tmp_path / "lake", tables=["battle"], fragments=3, rows_per_fragment=100)
    bad = tmp_path / "lake" / "battle" / "frag-000001.parquet"
    bad.write_text("battle_id,map_id\n1,1-1\n")

    # When compact-files runs
    proc = _run(str(tmp_path / "lake" / "battle"), "--output", str(tmp_path / "out"), "--no-progress")

    # Then a clear error naming the file, a non-zero exit, no summary and no output file
    assert proc.returncode != 0
    assert "frag-000001.parquet" in proc.stderr
    assert "not readable Parquet" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip() == ""
    assert all_files(tmp_path / "out") == []


def test_compact_files_on_a_missing_path_exits_non_zero(tmp_path: Path) -> None:
    # Given a path that does not exist, When compact-files runs, Then a usage error
    proc = _run(str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "no such file or folder" in proc.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("128MiB", 128 * 1024**2), ("64MB", 64 * 1000**2), ("1GiB", 1024**3), ("1048576", 1048576), ("1.5KiB", 1536)],
)
def test_sizes_parse_in_binary_and_decimal_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_compact_files_keeps_the_rows_of_rust_written_fragments(tmp_path: Path) -> None:
    # Given three copies of a fragment whose file-level num_rows says 0 (6 rows in its row group)
    for i in range(3):
        write(tmp_path / "lake" / f"f{i}.parquet", rust_zero_count_parquet(6))
    # When compact-files runs on them
    proc = _run(str(tmp_path / "lake"), "--output", str(tmp_path / "out"), "--no-progress")
    # Then all 18 rows are counted in and written out
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["rows_in"], summary["rows_out"]) == (18, 18)
    assert sum(len(rows_of_output(p)) for p in (tmp_path / "out").rglob("*.parquet")) == 18
