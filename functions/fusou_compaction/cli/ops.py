"""Operator commands against a stack: upload (backfills), status, dlq-status, token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fusou_compaction.catalog.errors import CatalogError, CatalogNotFound, DatasetForbidden
from fusou_compaction.cli.app import app
from fusou_compaction.cli.common import DEFAULT_ENDPOINTS, EndpointsOption, connect, err, load_endpoints, out
from fusou_compaction.local.endpoints import Endpoints


def _parquet_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(x for x in p.rglob("*.parquet") if x.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            err.print(f"[red]{p}: no such file or folder[/red]")
            raise typer.Exit(2)
    return files


@app.command("upload")
def upload(
    files: Annotated[list[Path], typer.Argument(help="Parquet files or folders of them")],
    dataset: Annotated[UUID, typer.Option("--dataset", help="dataset id (created for --user if new)")],
    table: Annotated[str, typer.Option("--table", help="table name, e.g. battle")],
    user: Annotated[UUID | None, typer.Option("--user", help="owner; default: the dataset's owner")] = None,
    endpoints: EndpointsOption = DEFAULT_ENDPOINTS,
) -> None:
    """Register fragments through the same logic as the API; one JSON line per file."""
    from fusou_compaction.logic.uploads import InvalidParquet, NotParquet, store_fragment

    stack = connect(endpoints)
    try:
        if user is None:
            try:
                user = stack.catalog.get_dataset(dataset).owner_id
            except CatalogNotFound:
                err.print("[red]new dataset: pass --user UUID to say who owns it[/red]")
                raise typer.Exit(2) from None
        failures = 0
        paths = _parquet_files(files)
        with Progress(
            TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
        ) as progress:
            task = progress.add_task("upload", total=len(paths))
            for path in paths:
                try:
                    stored = store_fragment(
                        stack.catalog,
                        stack.store,
                        owner_id=user,
                        dataset_id=dataset,
                        table=table,
                        data=path.read_bytes(),
                    )
                    print(json.dumps({"file": str(path), **stored.to_json_dict()}), flush=True)
                except (NotParquet, ValueError) as exc:
                    failures += 1
                    print(
                        json.dumps(
                            {
                                "file": str(path),
                                "error": "not_parquet"
                                if isinstance(exc, NotParquet)
                                else exc.code
                                if isinstance(exc, InvalidParquet)
                                else "invalid",
                                "message": str(exc),
                            }
                        ),
                        flush=True,
                    )
                except DatasetForbidden as exc:
                    err.print(f"[red]{exc}[/red]")
                    raise typer.Exit(3) from exc
                progress.advance(task)
        if failures:
            raise typer.Exit(1)
    finally:
        stack.close()


def _render_status(body: dict[str, Any]) -> None:
    t = Table(title=f"dataset {body['datasetId']}  (compaction needed: {body['compactionNeeded']})")
    for col in ("table", "fragments", "compacted", "rows", "bytes"):
        t.add_column(col, justify="left" if col == "table" else "right")
    for name, tb in sorted(body["tables"].items()):
        t.add_row(name, str(tb["fragments"]), str(tb["compacted"]), f"{tb['rows']:,}", f"{tb['bytes']:,}")
    out.print(t)
    runs = Table(title="last runs (newest first)")
    for col in ("run", "status", "trigger", "error step", "error"):
        runs.add_column(col)
    for r in body["runs"]:
        runs.add_row(str(r["runId"]), r["status"], r["trigger"], r.get("errorStep") or "", (r.get("error") or "")[:80])
    out.print(runs)
    if body.get("quarantined"):
        q = Table(title="quarantined (not compacted until an admin re-admits or deletes them)")
        for col in ("fragment", "table", "rows", "step", "reason"):
            q.add_column(col)
        for f in body["quarantined"]:
            q.add_row(f["fragmentId"], f["table"], f"{f['rows']:,}", f["step"] or "", (f["reason"] or "")[:80])
        out.print(q)


@app.command("status")
def status(
    dataset: Annotated[UUID, typer.Argument(help="dataset id")],
    endpoints: EndpointsOption = DEFAULT_ENDPOINTS,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object (the API's body)")] = False,
) -> None:
    """Live files per table, pending fragments, last runs."""
    from fusou_compaction.logic.status import dataset_status_body

    stack = connect(endpoints)
    try:
        body = dataset_status_body(stack.catalog, dataset)
    except CatalogNotFound:
        err.print(f"[red]unknown dataset {dataset}[/red]")
        raise typer.Exit(1) from None
    except CatalogError as exc:
        err.print(f"[red]catalog error: {exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        stack.close()
    if as_json:
        print(json.dumps(body, default=str))
    else:
        _render_status(body)


@app.command("dlq-status")
def dlq_status(
    endpoints: EndpointsOption = DEFAULT_ENDPOINTS,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object (the API's body)")] = False,
) -> None:
    """Queue and DLQ depth and age, and recent failures with their step and error."""
    from fusou_compaction.logic.status import dlq_status_body

    stack = connect(endpoints)
    try:
        body = dlq_status_body(stack.catalog, stack.queue, stack.dlq)
    finally:
        stack.close()
    if as_json:
        print(json.dumps(body, default=str))
        return
    q = Table(title="queues")
    for col in ("queue", "visible", "in flight", "oldest age (s)"):
        q.add_column(col)
    for name in ("queue", "dlq"):
        d = body[name]
        q.add_row(name, str(d["visible"]), str(d["inFlight"]), str(d["oldestAgeSeconds"] or "-"))
    out.print(q)
    f = Table(title="recent failures")
    for col in ("at", "dataset", "step", "error"):
        f.add_column(col)
    for x in body["recentFailures"]:
        f.add_row(str(x["at"]), str(x["datasetId"] or "-"), x["errorStep"] or "", (x["error"] or "")[:90])
    out.print(f)
    quarantined = body.get("quarantined") or {}
    if quarantined.get("fragments"):
        out.print(
            f"quarantined: {quarantined['fragments']} fragments ({quarantined['rows']:,} rows) in "
            f"{quarantined['datasets']} datasets, the oldest since {quarantined['oldestAt']}"
        )


@app.command("token")
def token(
    user: Annotated[UUID | None, typer.Option("--user", help="the JWT's sub; default: a new user")] = None,
    endpoints: EndpointsOption = DEFAULT_ENDPOINTS,
    ttl: Annotated[int, typer.Option("--ttl", help="seconds until it expires")] = 3600,
) -> None:
    """A dev JWT (HS256, like Supabase's) signed with the stack's local secret."""
    from fusou_compaction.logic.auth import mint_dev_token
    from fusou_compaction.settings import LOCAL_JWT_ISSUER

    ep = load_endpoints(endpoints)
    if not ep.jwt_secret:
        err.print("[red]tokens are minted only for the local stack; a deployed stack's users sign in to Supabase[/red]")
        raise typer.Exit(2)
    print(mint_dev_token(user or uuid4(), ep.jwt_secret, issuer=LOCAL_JWT_ISSUER, audience="authenticated", ttl=ttl))


@app.command("endpoints")
def endpoints_of_stack(
    stack: Annotated[str, typer.Option("--stack", help="the deployed stack, e.g. dev-kc-compaction")],
    output: Annotated[Path, typer.Option("--output", help="where to write the endpoints file")] = Path(
        ".fusou/deployed.json"
    ),
    region: Annotated[str | None, typer.Option("--region", help="default: your AWS configuration's")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="reach the catalog through Supabase's pooler instead")
    ] = None,
) -> None:
    """Write an endpoints file for a deployed stack from its CloudFormation outputs (your own AWS
    credentials), so that upload, status and dlq-status work against it."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cfn = boto3.client("cloudformation", region_name=region)
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    except (BotoCoreError, ClientError) as exc:
        err.print(f"[red]cannot read stack {stack}: {exc}[/red] (check your AWS credentials and --region)")
        raise typer.Exit(2) from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    needed = ("ApiUrl", "BucketName", "QueueUrl", "DlqUrl", "CatalogSecretArn")
    missing = [k for k in needed if k not in outputs]
    if missing:
        err.print(f"[red]stack {stack} has no output(s) {', '.join(missing)}: is it this service's stack?[/red]")
        raise typer.Exit(2)
    ep = Endpoints(
        api_url=outputs["ApiUrl"],
        region=cfn.meta.region_name,
        bucket=outputs["BucketName"],
        queue_url=outputs["QueueUrl"],
        dlq_url=outputs["DlqUrl"],
        catalog_secret_arn=None if database_url else outputs["CatalogSecretArn"],
        database_url=database_url,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(ep.to_json_dict(), indent=2) + "\n")
    output.chmod(0o600)  # a pooler URL holds a password
    print(str(output))
