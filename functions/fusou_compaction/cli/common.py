"""What CLI commands share: the endpoints file of a stack, and adapters built from it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import boto3
import typer
from rich.console import Console

from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.stack import Endpoints

# Rich assumes 80 columns when output is not a terminal (CI logs, files): give tables room.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out = Console(width=None if sys.stdout.isatty() else 140)

EndpointsOption = Annotated[Path, typer.Option("--endpoints", help="endpoints.json written by `fusou-compaction dev`")]
DEFAULT_ENDPOINTS = Path(".fusou/endpoints.json")


@dataclass
class StackClients:
    endpoints: Endpoints
    catalog: Catalog
    store: S3ObjectStore
    queue: SqsQueue
    dlq: SqsQueue

    def close(self) -> None:
        self.catalog.close()


def load_endpoints(path: Path) -> Endpoints:
    try:
        return Endpoints.load(path)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except (KeyError, ValueError) as exc:
        err.print(f"[red]{path} is not an endpoints file written by `fusou-compaction dev`: {exc}[/red]")
        raise typer.Exit(2) from exc


def connect(path: Path) -> StackClients:
    ep = load_endpoints(path)
    sqs = boto3.client(
        "sqs",
        endpoint_url=ep.aws_endpoint_url,
        region_name=ep.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 (moto's fixed local credentials)
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=ep.aws_endpoint_url,
        region_name=ep.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106
    )
    return StackClients(
        endpoints=ep,
        catalog=Catalog(PostgresRpc(ep.database_url, max_size=4)),
        store=S3ObjectStore(ep.bucket, region=ep.region, endpoint_url=ep.aws_endpoint_url, client=s3),
        queue=SqsQueue(sqs, ep.queue_url),
        dlq=SqsQueue(sqs, ep.dlq_url, peek_for_age=True),
    )
