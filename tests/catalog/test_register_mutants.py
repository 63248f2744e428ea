"""register_fragment's conditions that mutation testing (make mutate-sql) found untested."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from .conftest import World
from .interleave import one_after_another, slow_down

SHA = "ab" * 32


def _register(conn: psycopg.Connection, dataset: UUID, owner: UUID, table: str, sha: str = SHA) -> dict:  # type: ignore[type-arg]
    key = f"datasets/{dataset}/{table}/fragments/{sha}.parquet"
    row = conn.execute(
        "SELECT register_fragment(%s, %s, %s, %s, 10, 1, %s, 'fp1')", (dataset, owner, table, key, sha)
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_null_table_is_an_invalid_argument(world: World, sql: psycopg.Connection) -> None:
    # Given a key under the dataset's prefix with an empty table part (what format() makes of NULL)
    key = f"datasets/{world.dataset}//fragments/{SHA}.parquet"
    # When a fragment is registered with no table
    with pytest.raises(psycopg.Error) as refused:
        sql.execute(
            "SELECT register_fragment(%s, %s, NULL, %s, 10, 1, %s, 'fp1')", (world.dataset, world.owner, key, SHA)
        )
    # Then it is refused as an invalid argument (FC422), not as a NOT NULL violation, and nothing is written
    assert refused.value.sqlstate == "FC422"
    assert sql.execute("SELECT count(*) FROM datasets").fetchone() == (0,)


def test_an_unsafe_table_name_is_refused_before_ownership_is_looked_at(world: World, sql: psycopg.Connection) -> None:
    # Given a dataset that belongs to someone else
    world.fragment()
    # When another user registers into it under a table name that is not allowed
    with pytest.raises(psycopg.Error) as refused:
        _register(sql, world.dataset, uuid4(), "Bad-Table")
    # Then the name is what is refused (FC422): the arguments are checked first, whoever calls
    assert refused.value.sqlstate == "FC422"


def test_a_registration_racing_an_unfinished_one_of_the_same_bytes_is_a_duplicate(
    world: World, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a dataset, and inserts into dataset_files slowed down (between a registration's
    # look-up of its bytes and its insert, so two registrations of the same bytes overlap there)
    world.fragment()
    slow_down(sql, "dataset_files", "INSERT")

    def register(conn: psycopg.Connection) -> Any:
        return _register(conn, world.dataset, world.owner, "battle")

    # When a second registration of the same bytes starts while the first is inserting
    first, second = one_after_another(database_url, register, register)
    # Then the second waited for the first (the dataset's row lock) and found its bytes: a
    # duplicate, not a unique violation
    assert isinstance(first, dict) and first["duplicate"] is False
    assert isinstance(second, dict) and second["duplicate"] is True
    assert second["id"] == first["id"]
