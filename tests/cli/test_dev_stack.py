"""`fusou-compaction dev` as a user runs it: a subprocess, the ready line, the aws CLI, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import requests

from fusou_compaction import synth

from ..pipeline.conftest import seed_body, wait_for

BIN = Path(sys.executable).parent


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fusou-compaction"), *args], capture_output=True, text=True, check=check, timeout=120
    )


def port_open(url: str) -> bool:
    host, port = url.rsplit("//", maxsplit=1)[-1].rsplit("@", maxsplit=1)[-1].split("/", maxsplit=1)[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def dev_stack() -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any], Path]]:
    # Not under pytest's 0700 tmp dirs: as root, PostgreSQL runs as `postgres`, which must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="fusou-dev-"))
    data_dir.chmod(0o755)
    # Files, not pipes: a pipe nobody drains fills up and blocks the stack's logging.
    out, errs = data_dir / "stdout", data_dir / "stderr"
    with out.open("wb") as o, errs.open("wb") as e:
        proc = subprocess.Popen(
            [str(BIN / "fusou-compaction"), "dev", "--data-dir", str(data_dir)],
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    ready = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        ready = next((x.split(" ", 1)[1] for x in out.read_text().splitlines() if x.startswith("ready ")), "")
        if ready:
            break
        time.sleep(0.1)
    if not ready:
        proc.kill()
        pytest.fail(f"dev never printed its ready line: {errs.read_text()[-2000:]}")
    path = Path(ready.strip())
    yield proc, json.loads(path.read_text()), path
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def test_endpoints_json_has_every_documented_key(dev_stack: tuple[Any, dict[str, Any], Path]) -> None:
    _, endpoints, path = dev_stack
    assert set(endpoints) == {
        "api_url",
        "aws_endpoint_url",
        "region",
        "bucket",
        "queue_url",
        "dlq_url",
        "database_url",
        "admin_token",
        "jwt_secret",
    }
    assert endpoints["queue_url"].endswith("/dev-kc-compaction-queue")
    assert endpoints["dlq_url"].endswith("/dev-kc-compaction-dlq")
    assert path.name == "endpoints.json" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_upload_then_the_seeds_aws_sqs_send_message_compacts(
    dev_stack: tuple[Any, dict[str, Any], Path], tmp_path: Path
) -> None:
    _, ep, path = dev_stack
    dataset, user = uuid4(), uuid4()
    files = synth.generate_fragments(tmp_path, tables=["battle"], fragments=4, rows_per_fragment=300, seed=3)
    # Given fragments registered with `upload` (the backfill path)
    up = cli(
        "upload",
        *map(str, files),
        "--dataset",
        str(dataset),
        "--table",
        "battle",
        "--user",
        str(user),
        "--endpoints",
        str(path),
    )
    lines = [json.loads(x) for x in up.stdout.splitlines()]
    assert [x["duplicate"] for x in lines] == [False] * 4
    # When the seed's body is sent with the aws CLI against the local endpoint
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": ep["region"],
    }
    subprocess.run(
        [
            str(BIN / "aws"),
            "sqs",
            "send-message",
            "--endpoint-url",
            ep["aws_endpoint_url"],
            "--queue-url",
            ep["queue_url"],
            "--message-body",
            seed_body(dataset),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )

    # Then `status --json` shows one compacted file with all the rows
    def compacted() -> dict[str, Any] | None:
        body = json.loads(cli("status", str(dataset), "--endpoints", str(path), "--json").stdout)
        return body if body["runs"] and body["runs"][0]["status"] == "succeeded" else None

    body = wait_for(compacted, timeout=60, every=0.5)
    battle = body["tables"]["battle"]
    assert (battle["fragments"], battle["compacted"], battle["rows"]) == (0, 1, sum(x["rowCount"] for x in lines))
    assert body["compactionNeeded"] is False


def test_dlq_status_and_token_answer(dev_stack: tuple[Any, dict[str, Any], Path]) -> None:
    _, _, path = dev_stack
    body = json.loads(cli("dlq-status", "--endpoints", str(path), "--json").stdout)
    assert set(body) == {"queue", "dlq", "recentFailures", "quarantined"}
    assert set(body["dlq"]) == {"visible", "inFlight", "oldestAgeSeconds"}
    assert set(body["quarantined"]) == {"fragments", "datasets", "rows", "oldestAt"}
    token = cli("token", "--user", str(uuid4()), "--endpoints", str(path)).stdout.strip()
    assert token.count(".") == 2


def json_lines(text: str) -> list[str]:
    """Lines that are JSON objects: log records or EMF metric blobs."""
    found = []
    for line in text.splitlines():
        try:
            if isinstance(json.loads(line), dict):
                found.append(line)
        except ValueError:
            continue
    return found


def test_the_terminal_shows_events_and_the_log_file_holds_the_json(
    dev_stack: tuple[subprocess.Popen[bytes], dict[str, Any], Path], tmp_path: Path
) -> None:
    _, ep, path = dev_stack
    data_dir = path.parent
    # Given uploads through the API and a manual compaction of their dataset
    dataset, user = uuid4(), uuid4()
    token = cli("token", "--user", str(user), "--endpoints", str(path)).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    rows = 0
    for f in synth.generate_fragments(tmp_path, tables=["battle"], fragments=5, rows_per_fragment=50, seed=8):
        got = requests.post(
            f"{ep['api_url']}/api/compaction/upload",
            params={"datasetId": str(dataset), "table": "battle"},
            data=f.read_bytes(),
            headers={**auth, "Content-Type": "application/vnd.apache.parquet"},
            timeout=30,
        )
        assert got.status_code == 201, got.text
        rows += got.json()["rowCount"]
    requests.post(
        f"{ep['api_url']}/api/compaction/sanitize-state", json={"datasetId": str(dataset)}, headers=auth, timeout=30
    ).raise_for_status()
    short = str(dataset)[:8]
    stderr = data_dir / "stderr"
    line = wait_for(
        lambda: next((x for x in stderr.read_text().splitlines() if f"run {short}: compacted" in x), None), timeout=60
    )
    # Then the terminal shows one line per request and the run's result, and no JSON at all
    assert f"5 files → 1, {rows:,} rows in = {rows:,} out" in line
    terminal = (data_dir / "stdout").read_text() + stderr.read_text()
    assert terminal.count("POST /api/compaction/upload → 201") >= 5
    assert json_lines(terminal) == []
    assert [x for x in (data_dir / "stdout").read_text().splitlines() if x] == [f"ready {path}"]
    # And the functions' JSON logs and metrics are in the data dir's log file
    logged = json_lines((data_dir / "logs" / "stack.log").read_text())
    assert any('"FragmentsUploaded"' in x for x in logged)
    assert any(json.loads(x).get("message") == "manual compaction enqueued" for x in logged)


def test_ctrl_c_stops_everything(dev_stack: tuple[subprocess.Popen[bytes], dict[str, Any], Path]) -> None:
    proc, ep, _ = dev_stack
    assert port_open(ep["database_url"]) and port_open(ep["aws_endpoint_url"]) and port_open(ep["api_url"])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not port_open(ep["database_url"])
    assert not port_open(ep["aws_endpoint_url"])
    assert not port_open(ep["api_url"])
    leftovers = subprocess.run(
        ["pgrep", "-f", ep["database_url"].rsplit(":", 1)[1].split("/")[0]], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert leftovers == ""


def test_a_missing_endpoints_file_says_how_to_start_the_stack(tmp_path: Path) -> None:
    res = cli("status", str(uuid4()), "--endpoints", str(tmp_path / "nope.json"), check=False)
    assert res.returncode == 2 and "fusou-compaction dev" in res.stderr
