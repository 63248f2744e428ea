"""Row-level security and grants: only the service role writes; users read only their own."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

import psycopg
import pytest

from .conftest import World


def _as_user(conn: psycopg.Connection, user: UUID) -> None:
    conn.execute("SET ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": str(user)}),))


def test_a_user_reads_only_their_own_datasets_files_and_runs(world: World, catalog, database_url: str) -> None:  # type: ignore[no-untyped-def]
    # Given two users with a dataset each, and a run on the first
    world.fragment()
    world.running_run()
    other = World(catalog, owner=uuid4(), dataset=uuid4())
    other.fragment()
    # When the first user reads through PostgREST's role
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as_user(conn, world.owner)
        datasets = conn.execute("SELECT id FROM datasets").fetchall()
        files = conn.execute("SELECT dataset_id FROM dataset_files").fetchall()
        runs = conn.execute("SELECT dataset_id FROM compaction_runs").fetchall()
    # Then only their rows are visible
    assert datasets == [(world.dataset,)]
    assert files == [(world.dataset,)]
    assert runs == [(world.dataset,)]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO datasets (id, owner_id) VALUES (gen_random_uuid(), gen_random_uuid())",
        "UPDATE datasets SET compaction_needed = false",
        "DELETE FROM dataset_files",
        "SELECT * FROM compaction_failures",
    ],
)
def test_users_cannot_write_or_read_failures(world: World, database_url: str, statement: str) -> None:
    world.fragment()
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as_user(conn, world.owner)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_only_the_service_role_may_call_the_functions(world: World, database_url: str, role: str) -> None:
    world.fragment()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT claim_pending_datasets(10, 'x', 60)")


def test_the_service_role_writes_through_the_functions(world: World) -> None:
    # The catalog fixture runs every call as service_role: a write that succeeds proves the grants.
    frag = world.fragment()
    assert world.catalog.list_live_files(world.dataset)[0].id == frag.id
