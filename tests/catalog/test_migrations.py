"""The migration runner and `fusou-compaction db migrate`."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from fusou_compaction.catalog.migrate import MigrationError, default_migrations_dir, discover, migrate
from fusou_compaction.cli import app


def test_migrate_applies_every_version_once(empty_database_url: str) -> None:
    versions = [m.version for m in discover(default_migrations_dir())]
    assert migrate(empty_database_url) == versions
    assert migrate(empty_database_url) == []
    with psycopg.connect(empty_database_url) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == versions


def test_an_edited_applied_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    # Given migrations applied from a copy
    copy = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), copy)
    migrate(empty_database_url, copy)
    # When an applied file is edited
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    # Then migrate refuses instead of silently diverging
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database_url, copy)


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        discover(tmp_path)


def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    barrier = threading.Barrier(3)

    def run(_: int) -> list[str]:
        barrier.wait()
        return migrate(empty_database_url)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, range(3)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in discover(default_migrations_dir())]


def test_cli_migrate_is_idempotent(empty_database_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["db", "migrate", "--database-url", empty_database_url])
    second = runner.invoke(app, ["db", "migrate", "--database-url", empty_database_url])
    versions = ", ".join(m.version for m in discover(default_migrations_dir()))
    # (the terminal wraps long lines: compared with the line breaks taken out)
    assert first.exit_code == 0 and f"applied migrations: {versions}" in " ".join(first.output.split())
    assert second.exit_code == 0 and "up to date" in second.output


def test_cli_migrate_against_a_dead_server_says_what_to_check() -> None:
    result = CliRunner().invoke(app, ["db", "migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/x"])
    assert result.exit_code == 2 and "Check that the database is running" in result.output
