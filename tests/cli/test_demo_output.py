"""`fusou-compaction demo` (what `make demo` runs) shows a person progress and results, and writes
the functions' JSON logs and metrics to a file under its data dir, never to the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_dev_stack import json_lines

BIN = Path(sys.executable).parent


def test_demo_prints_progress_and_a_summary_and_logs_to_a_file(tmp_path: Path) -> None:
    # When a small demo runs
    res = subprocess.run(
        [str(BIN / "fusou-compaction"), "demo", "--datasets", "3", "--fragments", "3", "--rows", "200",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    # Then it succeeds, with its summary and its progress on the terminal
    assert res.returncode == 0, res.stderr[-3000:]
    assert "before → after" in res.stdout and "every dataset compacted" in res.stderr
    assert "uploading fragments through the API" in res.stderr
    # And not one JSON log line or metric blob there (every upload used to print an EMF blob)
    assert json_lines(res.stdout + res.stderr) == []
    # And the handlers' logs and metrics are in the data dir's log file, named on the terminal
    log = tmp_path / "logs" / "stack.log"
    assert str(log) in res.stderr
    logged = json_lines(log.read_text())
    assert sum('"FragmentsUploaded"' in x for x in logged) >= 1
    assert any(json.loads(x).get("level") == "INFO" for x in logged)
