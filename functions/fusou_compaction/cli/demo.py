"""`fusou-compaction demo`: the main job, end to end, on an embedded local stack.

Generates battle-record fragments (with client drift) for a few datasets, uploads them through
the HTTPS API, compacts each dataset by a different trigger — the manual API call, an
`aws sqs send-message` of the seed's body, and the scheduled claim — then reads every output
back and prints a before/after summary. Exit 0 only if rows in = rows out everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fusou_compaction.cli.app import app
from fusou_compaction.cli.common import err, out

TRIGGERS = ("manual", "aws-sqs", "scheduled")


@dataclass
class DemoDataset:
    id: UUID
    owner: UUID
    trigger: str
    token: str = ""
    rows_uploaded: dict[str, int] = field(default_factory=dict)
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    rows_read_back: dict[str, int] = field(default_factory=dict)
    run_status: str = "pending"
    run_rows_in: int | None = None
    run_rows_out: int | None = None
    triggered_at: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.run_status == "succeeded"
            and self.rows_uploaded == self.rows_read_back
            and self.run_rows_in == self.run_rows_out == sum(self.rows_uploaded.values())
        )


def _send_with_aws_cli(ep: Any, body: str) -> str:
    """What an operator types: `aws sqs send-message` with the seed's body, against the local endpoint."""
    aws = (
        str(Path(sys.executable).with_name("aws"))
        if Path(sys.executable).with_name("aws").exists()
        else (shutil.which("aws") or "aws")
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": ep.region}
    if Path(aws).exists():
        res = subprocess.run(
            [
                aws,
                "sqs",
                "send-message",
                "--endpoint-url",
                ep.aws_endpoint_url,
                "--queue-url",
                ep.queue_url,
                "--message-body",
                body,
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        if res.returncode == 0:
            return f"aws sqs send-message → {json.loads(res.stdout)['MessageId']}"
        err.print(f"[yellow]aws CLI failed ({res.stderr.strip()[:200]}); sending with boto3 instead[/yellow]")
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=ep.aws_endpoint_url,
        region_name=ep.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 (moto's fixed local credentials)
    )
    return f"boto3 send_message → {sqs.send_message(QueueUrl=ep.queue_url, MessageBody=body)['MessageId']}"


@app.command("demo")
def demo(
    datasets: Annotated[int, typer.Option(help="datasets to create (triggers rotate manual, sqs, scheduled)")] = 3,
    fragments: Annotated[int, typer.Option(help="fragments per table per dataset")] = 20,
    rows: Annotated[int, typer.Option(help="mean rows per fragment")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed of the generated data")] = 1,
    timeout: Annotated[float, typer.Option(help="seconds to wait for all runs")] = 600.0,
    *,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="where the stack's endpoints.json and logs/stack.log are written")
    ] = Path(".fusou/demo"),
) -> None:
    """Run the whole system locally and show it compacting."""
    import httpx

    from fusou_compaction.local.console import logs_to_file
    from fusou_compaction.local.stack import LocalStack, StackOptions
    from fusou_compaction.logic.auth import mint_dev_token
    from fusou_compaction.settings import LOCAL_JWT_ISSUER

    if datasets < 1:
        raise typer.BadParameter("at least one dataset", param_hint="--datasets")
    items = [DemoDataset(uuid4(), uuid4(), TRIGGERS[i % len(TRIGGERS)]) for i in range(datasets)]

    # The handlers log and emit metrics as in AWS: to a file, as a log group would hold them; the
    # terminal shows the demo's progress and its summary. The catalog and objects are throwaway.
    with logs_to_file(data_dir / "logs" / "stack.log") as terminal:
        err.print("starting the local stack (PostgreSQL, moto S3/SQS, API, pollers, step runner)…")
        started = time.monotonic()
        with LocalStack(StackOptions(data_dir=data_dir, run_daily_schedule=False)) as stack:
            stack.write_endpoints()
            ep, deps = stack.endpoints, stack.deps
            assert ep is not None and deps is not None and ep.jwt_secret and ep.admin_token
            err.print(f"stack ready in {time.monotonic() - started:.1f}s: API {ep.api_url}, AWS {ep.aws_endpoint_url}")
            for d in items:
                d.token = mint_dev_token(d.owner, ep.jwt_secret, issuer=LOCAL_JWT_ISSUER, audience="authenticated")
            with httpx.Client(base_url=ep.api_url, timeout=60) as http:
                _upload(http, deps, items, fragments=fragments, rows=rows, seed=seed)
                _trigger(http, ep, deps, items, timeout)
            _read_back(deps, items)

    _summary(items)
    err.print(f"the stack's logs and metrics: {terminal.log_path}")
    if not all(d.ok for d in items):
        err.print("[red]some datasets did not compact with rows in = rows out[/red]")
        raise typer.Exit(1)
    err.print("[green]every dataset compacted; rows in = rows out everywhere[/green]")


def _upload(http: Any, deps: Any, items: list[DemoDataset], *, fragments: int, rows: int, seed: int) -> None:
    """Through the HTTPS API, as the desktop clients do."""
    from fusou_compaction import synth

    tables = list(synth.TABLE_NAMES)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("uploading fragments through the API", total=len(items) * len(tables) * fragments)
        for i, d in enumerate(items):
            for frag in synth.iter_fragments(
                tables=tables, fragments=fragments, rows_per_fragment=rows, seed=seed * 1000 + i, drift=True
            ):
                resp = http.post(
                    "/api/compaction/upload",
                    params={"datasetId": str(d.id), "table": frag.table},
                    content=frag.data,
                    headers={"Authorization": f"Bearer {d.token}", "Content-Type": "application/vnd.apache.parquet"},
                )
                if resp.status_code != 201:
                    err.print(f"[red]upload failed: {resp.status_code} {resp.text}[/red]")
                    raise typer.Exit(1)
                d.rows_uploaded[frag.table] = d.rows_uploaded.get(frag.table, 0) + frag.rows
                progress.advance(task)
    for d in items:
        ds = deps.catalog.get_dataset(d.id)
        d.files_before, d.bytes_before = ds.live_fragments + ds.live_compacted, ds.live_bytes


def _trigger(http: Any, ep: Any, deps: Any, items: list[DemoDataset], timeout: float) -> None:
    """Each dataset its own way; the scheduled claim goes last so it finds only its own."""
    for d in items:
        if d.trigger == "scheduled":
            continue
        d.triggered_at = time.monotonic()
        if d.trigger == "manual":
            resp = http.post(
                "/api/compaction/sanitize-state",
                json={"datasetId": str(d.id)},
                headers={"Authorization": f"Bearer {d.token}"},
            )
            if resp.status_code != 202:
                err.print(f"[red]sanitize-state → {resp.status_code} {resp.text}[/red]")
                raise typer.Exit(1)
            note = f"POST /api/compaction/sanitize-state → {resp.status_code}"
        else:
            body = json.dumps({"datasetId": str(d.id), "triggeredAt": "2025-12-17T00:00:00Z", "priority": "manual"})
            note = _send_with_aws_cli(ep, body)
        err.print(f"  {str(d.id)[:8]} ({d.trigger}): {note}")
    scheduled = [d for d in items if d.trigger == "scheduled"]
    if scheduled:
        # Let the other runs take their leases first, as a real night would.
        _wait(deps, [d for d in items if d.trigger != "scheduled"], timeout, progress_label="compacting")
        for d in scheduled:
            d.triggered_at = time.monotonic()
        resp = http.post("/api/compaction/trigger-scheduled", headers={"X-Admin-Token": ep.admin_token})
        answer = resp.json() if resp.status_code == 202 else {}
        enqueued, failed = answer.get("enqueued", []), answer.get("failed", {})
        err.print(
            f"  POST /api/compaction/trigger-scheduled → {resp.status_code}: "
            + (f"{len(enqueued)} enqueued, {len(failed)} failed" if answer else resp.text[:200])
        )
    _wait(deps, items, timeout, progress_label="compacting")


def _read_back(deps: Any, items: list[DemoDataset]) -> None:
    """Every output, read with pyarrow over S3: not the catalog's counters."""
    import pyarrow.parquet as pq

    from fusou_compaction.engine.rowcount import count_rows

    fs = deps.store.filesystem()
    for d in items:
        status = deps.catalog.dataset_status(d.id)
        run = status.runs[0] if status.runs else None
        d.run_status = run.status if run else "none"
        d.run_rows_in, d.run_rows_out = (run.rows_in, run.rows_out) if run else (None, None)
        d.files_after, d.bytes_after = len(status.files), sum(f.size_bytes for f in status.files)
        for f in status.files:
            md = pq.ParquetFile(deps.store.path_for(f.object_key), filesystem=fs).metadata
            n = count_rows(md).total  # the row groups', as readers count (engine/rowcount.py)
            d.rows_read_back[f.table_name] = d.rows_read_back.get(f.table_name, 0) + n


def _wait(deps: Any, items: list[DemoDataset], timeout: float, progress_label: str) -> None:
    deadline = time.monotonic() + timeout
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"{progress_label} {len(items)} datasets", total=len(items))
        pending = {d.id: d for d in items}
        while pending and time.monotonic() < deadline:
            for ds_id, d in list(pending.items()):
                runs = deps.catalog.dataset_status(ds_id).runs
                done = [r for r in runs if r.status in ("succeeded", "failed")]
                if done:
                    d.seconds = time.monotonic() - d.triggered_at
                    del pending[ds_id]
                    progress.advance(task)
            time.sleep(0.2)
    if pending:
        err.print(f"[red]timed out waiting for {len(pending)} datasets[/red]")


def _summary(items: list[DemoDataset]) -> None:
    t = Table(title="FUSOU compaction demo: before → after")
    for col in ("dataset", "trigger", "tables", "files", "bytes", "rows in", "rows out (read back)", "time", "status"):
        t.add_column(col, justify="right" if col not in ("dataset", "trigger", "status") else "left")
    for d in items:
        rows_in, rows_back = sum(d.rows_uploaded.values()), sum(d.rows_read_back.values())
        t.add_row(
            str(d.id)[:8],
            d.trigger,
            str(len(d.rows_uploaded)),
            f"{d.files_before} → {d.files_after}",
            f"{d.bytes_before / 1e6:.1f} MB → {d.bytes_after / 1e6:.1f} MB",
            f"{rows_in:,}",
            f"{rows_back:,}",
            f"{d.seconds:.1f}s",
            "[green]ok[/green]" if d.ok else f"[red]{d.run_status}[/red]",
        )
    out.print(t)
