"""`bench/run.py --quick` runs every method end to end (the numbers themselves are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_every_method_and_ours_keeps_every_row() -> None:
    # Given the small cached data set, When the bench runs in quick mode
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )

    # Then it exits 0 (ours kept every row), and prints a line per method, the ratio and the 4x run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for method in ("ours", "ours-schema", "duckdb", "polars", "pyarrow", "decode-only", "encode-only"):
        assert any(line.split()[:1] == [method] for line in lines), f"{method} missing:\n{proc.stdout}"
    for ours in ("ours", "ours-schema"):
        line = next(line for line in lines if line.startswith(f"{ours} "))
        assert " yes " in line
        for peer in ("duckdb", "polars", "pyarrow"):
            assert f"paired {ours}/{peer} over 1 round(s): wall " in proc.stdout
        assert f"{ours} on 4x the data:" in proc.stdout
    assert "best peer:" in proc.stdout
