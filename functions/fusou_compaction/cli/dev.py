"""`fusou-compaction dev`: the local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from fusou_compaction.cli.app import app
from fusou_compaction.cli.common import err
from fusou_compaction.local.postgres import PostgresUnavailable


@app.command("dev")
def dev(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="holds the catalog, the objects and endpoints.json; started again on it, resumes"
        ),
    ] = Path(".fusou"),
    api_port: Annotated[int, typer.Option("--api-port", help="0 = any free port")] = 0,
    aws_port: Annotated[int, typer.Option("--aws-port", help="moto server port; 0 = any free port")] = 0,
    pg_port: Annotated[int, typer.Option("--pg-port", help="PostgreSQL port; 0 = any free port")] = 0,
) -> None:
    """Run moto (S3, SQS), PostgreSQL, the API, the queue pollers and the step runner on 127.0.0.1.

    The terminal shows one line per request, run, upload and failure; the functions' JSON logs and
    metrics go to DATA_DIR/logs/stack.log, as a log group would hold them."""
    from fusou_compaction.local.console import logs_to_file
    from fusou_compaction.local.stack import LocalStack, StackOptions

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # A parent may start us with these blocked (the mask survives exec): Ctrl-C must still work.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def feed(line: str) -> None:
        err.print(f"{datetime.now().strftime('%H:%M:%S')} {line}", markup=False, highlight=False, soft_wrap=True)

    options = StackOptions(
        data_dir=data_dir, api_port=api_port, aws_port=aws_port, pg_port=pg_port, persist=True, feed=feed
    )
    with logs_to_file(data_dir / "logs" / "stack.log", feed=feed) as terminal:
        try:
            stack = LocalStack(options).start()
        except PostgresUnavailable as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        except OSError as exc:
            err.print(f"[red]could not start the local stack: {exc}[/red] (is a port already in use?)")
            raise typer.Exit(2) from exc
        try:
            path = stack.write_endpoints()
            ep = stack.endpoints
            assert ep is not None
            err.print(
                f"API        {ep.api_url}\nAWS (moto) {ep.aws_endpoint_url}\nPostgreSQL {ep.database_url}\n"
                f"queue      {ep.queue_url}\nDLQ        {ep.dlq_url}\n"
                f"kept in    {data_dir} (catalog, {stack.restored_objects} objects resumed)\n"
                f"logs       {terminal.log_path}\nCtrl-C stops everything.",
                highlight=False,
            )
            print(f"ready {path}", file=terminal.stdout, flush=True)
            # Wake up regularly: the kernel may deliver SIGINT to any of our threads, and CPython runs
            # the handler only when the main thread returns to the interpreter loop.
            while not stop.wait(0.25):
                pass
        finally:
            err.print("stopping…")
            stack.stop()
