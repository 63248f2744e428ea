"""`fusou-compaction dev` survives `kill -9` as the deployed system survives a crash: no process left
behind, the catalog and the objects kept under --data-dir, the interrupted run recovered by its
lease's expiry and the next run, with no row lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from fusou_compaction import synth
from fusou_compaction.local.postgres import free_port
from fusou_compaction.local.stack import LocalStack, StackOptions

from ..pipeline.conftest import row_multiset, seed_body, wait_for
from .test_dev_stack import cli, port_open

BIN = Path(sys.executable).parent


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp dirs: as root, PostgreSQL runs as `postgres`, which must reach it.
    path = Path(tempfile.mkdtemp(prefix="fusou-dev-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


class Dev:
    """One `fusou-compaction dev` process on fixed ports."""

    def __init__(self, data_dir: Path, ports: dict[str, int]) -> None:
        self.data_dir, self.ports = data_dir, ports
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        out, errs = self.data_dir / "dev.stdout", self.data_dir / "dev.stderr"
        with out.open("wb") as o, errs.open("wb") as e:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "fusou-compaction"),
                    "dev",
                    "--data-dir",
                    str(self.data_dir),
                    *[x for name, port in self.ports.items() for x in (f"--{name}-port", str(port))],
                ],
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(x.startswith("ready ") for x in out.read_text().splitlines()):
                return json.loads((self.data_dir / "endpoints.json").read_text())  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise AssertionError(f"dev never became ready: {errs.read_text()[-3000:]}")

    def children(self) -> list[int]:
        assert self.proc is not None
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in found.stdout.split()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def running_under(data_dir: Path) -> list[str]:
    """Processes whose command line names the data dir (the server and every backend it forked)."""
    found = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line and alive(int(line.split()[0]))]


def sql(ep: dict[str, Any], query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(ep["database_url"], autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def s3(ep: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=ep["aws_endpoint_url"],
        region_name=ep["region"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def compacting(ep: dict[str, Any], dataset: UUID) -> UUID | None:
    """The run id once its Compact step is writing output (a multipart upload under its prefix)."""
    rows = sql(ep, "SELECT id FROM compaction_runs WHERE dataset_id = %s AND status = 'running'", dataset)
    if not rows:
        return None
    run: UUID = rows[0][0]
    uploads = s3(ep).list_multipart_uploads(Bucket=ep["bucket"], Prefix=f"datasets/{dataset}/").get("Uploads", [])
    writing = [u for u in uploads if f"/compacted/{run}/" in u["Key"]]
    return run if writing else None


def multiset(tables: list[pa.Table]) -> list[str]:
    # Table by table: fragments of one table may differ in encoding (dictionary or not).
    return sorted(r for t in tables for r in row_multiset(t))


def live_rows(ep: dict[str, Any], dataset: UUID, table: str) -> list[pa.Table]:
    keys = sql(
        ep,
        "SELECT object_key FROM dataset_files WHERE dataset_id = %s AND table_name = %s AND removed_at IS NULL"
        " ORDER BY seq",
        dataset,
        table,
    )
    client = s3(ep)
    bodies = [client.get_object(Bucket=ep["bucket"], Key=k)["Body"].read() for (k,) in keys]
    return [pq.read_table(pa.BufferReader(b)) for b in bodies]


def test_kill_9_mid_compact_leaves_nothing_running_and_the_next_start_recovers_every_row(data_dir: Path) -> None:
    ports = {"pg": free_port(), "aws": free_port(), "api": free_port()}
    dev = Dev(data_dir, ports)
    try:
        ep = dev.start()
        # Given a dataset of two tables (40 fragments, 800,000 rows) uploaded to the stack
        dataset, user = uuid4(), uuid4()
        files = synth.generate_fragments(
            data_dir / "frags",
            tables=["battle", "ship_state"],
            fragments=20,
            rows_per_fragment=20_000,
            seed=11,
            drift=False,
        )
        uploaded: dict[str, list[pa.Table]] = {}
        for table in ("battle", "ship_state"):
            mine = [f for f in files if f.parent.name == table]
            cli("upload", *map(str, mine), "--dataset", str(dataset), "--table", table, "--user", str(user),
                "--endpoints", str(data_dir / "endpoints.json"))  # fmt: skip
            uploaded[table] = [pq.read_table(f) for f in mine]
        # And its compaction started, and caught writing its output
        sqs = boto3.client(
            "sqs", endpoint_url=ep["aws_endpoint_url"], region_name=ep["region"],
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        sqs.send_message(QueueUrl=ep["queue_url"], MessageBody=seed_body(dataset))
        killed_run = wait_for(lambda: compacting(ep, dataset), timeout=120, every=0.05)
        children = dev.children()
        assert children, "the stack runs PostgreSQL as its child"

        # When the stack is killed with SIGKILL mid-Compact
        assert dev.proc is not None
        os.kill(dev.proc.pid, signal.SIGKILL)
        dev.proc.wait(30)

        # Then no process it started is left running, and its ports are free again
        wait_for(lambda: not any(alive(p) for p in children), timeout=30)
        wait_for(lambda: not running_under(data_dir), timeout=30)  # PostgreSQL's own children too
        wait_for(lambda: not any(port_open(f"http://127.0.0.1:{p}") for p in ports.values()), timeout=30)

        # When it is started again on the same data dir and the same ports
        ep = dev.start()
        # Then the catalog and the objects are back: the dataset, its live fragments, the interrupted run
        [(status,)] = sql(ep, "SELECT status FROM compaction_runs WHERE id = %s", killed_run)
        assert status == "running"  # it died with the stack; its lease has not expired yet
        for table, tables in uploaded.items():
            assert multiset(live_rows(ep, dataset, table)) == multiset(tables)
        # And the tokens minted before the restart still work
        token = cli("token", "--user", str(user), "--endpoints", str(data_dir / "endpoints.json")).stdout.strip()
        got = requests.get(f"{ep['api_url']}/api/compaction/datasets/{dataset}",
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        assert got.status_code == 200, got.text

        # When the run's lease expires (15 min; the clock is moved on) and the scheduled claim runs
        sql(ep, "UPDATE datasets SET lease_expires_at = now() - interval '1 second' WHERE id = %s", dataset)
        trigger = requests.post(f"{ep['api_url']}/api/compaction/trigger-scheduled",
                                headers={"X-Admin-Token": ep["admin_token"]}, timeout=30)  # fmt: skip
        assert str(dataset) in trigger.json()["enqueued"]

        # Then a new run takes the lease over and commits, and the interrupted one is failed
        def settled() -> list[tuple[Any, ...]] | None:
            runs = sql(ep, "SELECT id, status, error FROM compaction_runs WHERE dataset_id = %s", dataset)
            return runs if any(status == "succeeded" for _, status, _ in runs) else None

        runs = {r[0]: r for r in wait_for(settled, timeout=180, every=0.5)}
        assert runs[killed_run][1] == "failed" and "lease expired" in runs[killed_run][2]
        assert sorted(status for _, status, _ in runs.values()) == ["failed", "succeeded"]
        # And every uploaded row is live exactly once, read back from the compacted objects
        for table, tables in uploaded.items():
            assert multiset(live_rows(ep, dataset, table)) == multiset(tables)
        kinds = sql(ep, "SELECT DISTINCT kind FROM dataset_files WHERE dataset_id = %s AND removed_at IS NULL", dataset)
        assert kinds == [("compacted",)]
    finally:
        dev.stop()


def test_a_data_dir_the_postgres_user_cannot_reach_keeps_its_catalog_elsewhere_and_resumes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only as root does PostgreSQL run as another user (postgres) than the caller")
    # Given a data dir under pytest's own 0700 directories, which the postgres user cannot enter
    data_dir = tmp_path / "dev"
    options = StackOptions(data_dir=data_dir, persist=True, serve_api=False, run_daily_schedule=False)
    dataset = uuid4()
    try:
        # When a kept stack starts on it and registers something
        with LocalStack(options) as stack:
            assert stack.deps is not None
            stack.deps.catalog.register_fragment(
                dataset_id=dataset, owner_id=uuid4(), table="battle",
                object_key=f"datasets/{dataset}/battle/fragments/{'a' * 64}.parquet",
                size_bytes=1, row_count=1, sha256="a" * 64, schema_fingerprint="fp",
            )  # fmt: skip
        # Then the catalog lives in /var/tmp, linked from data_dir/catalog, and a new stack resumes it
        link = data_dir / "catalog"
        assert link.is_symlink() and str(link.resolve()).startswith("/var/tmp/fusou-catalog-")
        with LocalStack(options) as stack:
            assert stack.deps is not None
            assert stack.deps.catalog.get_dataset(dataset).live_rows == 1
    finally:
        if (data_dir / "catalog").is_symlink():
            subprocess.run(["rm", "-rf", str((data_dir / "catalog").resolve())], check=False)
