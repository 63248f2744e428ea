"""`fusou-compaction db migrate`: apply the catalog's SQL migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fusou_compaction.cli.app import app

db_app = typer.Typer(help="Catalog database operations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
err = Console(stderr=True)


@db_app.command("migrate")
def migrate_command(
    database_url: Annotated[
        str, typer.Option("--database-url", envvar="FUSOU_DATABASE_URL", help="postgresql:// URL of the catalog")
    ],
    migrations_dir: Annotated[Path | None, typer.Option(help="Defaults to infra/supabase/migrations")] = None,
) -> None:
    """Apply pending migrations (idempotent; safe to run concurrently)."""
    from fusou_compaction.catalog.migrate import MigrationError, migrate  # psycopg: only here

    try:
        applied = migrate(database_url, migrations_dir)
    except MigrationError as exc:
        err.print(f"[red]migration failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    except Exception as exc:
        err.print(
            f"[red]cannot migrate {database_url.split('@')[-1]}:[/red] {exc}\n"
            "Check that the database is running and the URL is right."
        )
        raise typer.Exit(2) from exc
    if applied:
        err.print(f"applied migrations: {', '.join(applied)}")
    else:
        err.print("catalog is up to date")
