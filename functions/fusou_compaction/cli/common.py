"""What CLI commands share: the endpoints file of a stack, and adapters built from it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fusou_compaction.local.endpoints import Endpoints

# Adapters, boto3 and the catalog load when a command connects, not when the CLI starts.
if TYPE_CHECKING:
    from fusou_compaction.adapters.s3 import S3ObjectStore
    from fusou_compaction.adapters.sqs import SqsQueue
    from fusou_compaction.catalog.client import Catalog

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
        err.print(
            f"[red]{path} is not an endpoints file (from `fusou-compaction dev` or `endpoints --stack`): {exc}[/red]"
        )
        raise typer.Exit(2) from exc


def _aws_client(ep: Endpoints, service: str) -> Any:
    import boto3

    if ep.aws_endpoint_url is not None:  # the local stack: moto takes any credentials, botocore needs some
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=ep.aws_endpoint_url,
            region_name=ep.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 (moto's fixed local credentials)
        )
    # A deployed stack: the caller's own credentials and configuration (profile, SSO, env).
    return boto3.client(service, region_name=ep.region)  # type: ignore[call-overload]


def _catalog(ep: Endpoints) -> Catalog:
    from fusou_compaction.catalog.client import Catalog
    from fusou_compaction.catalog.transport import PostgresRpc

    if ep.database_url:
        return Catalog(PostgresRpc(ep.database_url, max_size=4))
    if ep.catalog_secret_arn:
        # As the deployed functions reach it: supabase-py, the URL and key from the catalog secret
        # (read with the caller's credentials).
        from fusou_compaction.settings import Settings
        from fusou_compaction.wiring import RuntimeConfig, build_catalog

        settings = Settings(
            catalog_transport="supabase",
            catalog_secret_arn=ep.catalog_secret_arn,
            region=ep.region,
            aws_endpoint_url=ep.aws_endpoint_url,
        )
        return build_catalog(RuntimeConfig(settings))
    err.print("[red]the endpoints file names no catalog: add database_url or catalog_secret_arn[/red]")
    raise typer.Exit(2)


def connect(path: Path) -> StackClients:
    from fusou_compaction.adapters.s3 import S3ObjectStore
    from fusou_compaction.adapters.sqs import SqsQueue
    from fusou_compaction.settings import ConfigurationError

    ep = load_endpoints(path)
    sqs = _aws_client(ep, "sqs")
    try:
        catalog = _catalog(ep)
    except ConfigurationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    return StackClients(
        endpoints=ep,
        catalog=catalog,
        store=S3ObjectStore(
            ep.bucket, region=ep.region, endpoint_url=ep.aws_endpoint_url, client=_aws_client(ep, "s3")
        ),
        queue=SqsQueue(sqs, ep.queue_url),
        dlq=SqsQueue(sqs, ep.dlq_url, peek_for_age=True),
    )
