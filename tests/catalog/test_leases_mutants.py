"""acquire_lease's conditions that mutation testing (make mutate-sql) found untested: the lease
length's bounds, a lease that ends at this very moment, and the row lock that serializes takers."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from .conftest import World
from .interleave import one_after_another, slow_down


def _acquire(conn: psycopg.Connection, dataset: UUID, run: UUID, seconds: int | None) -> dict:  # type: ignore[type-arg]
    row = conn.execute("SELECT acquire_lease(%s, %s, %s)", (dataset, run, seconds)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("seconds", [0, -5, None])
def test_a_lease_of_no_positive_length_is_refused(world: World, sql: psycopg.Connection, seconds: int | None) -> None:
    world.fragment()
    with pytest.raises(psycopg.Error) as refused:
        _acquire(sql, world.dataset, uuid4(), seconds)
    assert refused.value.sqlstate == "FC422"
    assert sql.execute("SELECT lease_owner FROM datasets").fetchone() == (None,)


def test_a_lease_of_one_second_is_granted_for_one_second(world: World, sql: psycopg.Connection) -> None:
    world.fragment()
    run = uuid4()
    with sql.transaction():
        assert _acquire(sql, world.dataset, run, 1)["acquired"] is True
        held = sql.execute("SELECT lease_owner, lease_expires_at - now() FROM datasets").fetchone()
    assert held is not None and held[0] == run and held[1].total_seconds() == 1


@pytest.mark.parametrize(("expires_in", "taken"), [("0 seconds", True), ("1 microsecond", False)])
def test_a_lease_ending_at_this_very_moment_can_be_taken_over(
    world: World, sql: psycopg.Connection, expires_in: str, taken: bool
) -> None:
    # Given a run holding the lease, which ends exactly now (the transaction's now) or just after
    world.fragment()
    holder = world.running_run()
    newcomer = uuid4()
    # When another run asks for it in that same transaction
    with sql.transaction():
        sql.execute(f"UPDATE datasets SET lease_expires_at = now() + interval '{expires_in}'")
        result = _acquire(sql, world.dataset, newcomer, 60)
    # Then a lease that ends now is over (taken over), one that ends later is still held
    assert result["acquired"] is taken
    owner = sql.execute("SELECT lease_owner FROM datasets").fetchone()
    assert owner == ((newcomer,) if taken else (holder,))


def test_two_runs_asking_at_once_get_one_lease_however_they_interleave(
    world: World, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a free dataset, and updates of datasets slowed down (the first taker sits between
    # reading the dataset and writing its lease while the second reads it)
    world.fragment()
    slow_down(sql, "datasets", "UPDATE")

    def take(conn: psycopg.Connection) -> Any:
        return _acquire(conn, world.dataset, uuid4(), 60)["acquired"]

    # When a second run asks while the first is writing its lease
    first, second = one_after_another(database_url, take, take)
    # Then the second waited on the dataset's row and found it leased
    assert (first, second) == (True, False)


def test_a_holder_renewing_its_lease_keeps_its_run_running(world: World, sql: psycopg.Connection) -> None:
    # Given a running run holding the dataset's lease
    world.fragment()
    run = world.running_run()
    # When it renews its own lease
    assert _acquire(sql, world.dataset, run, 600)["acquired"] is True
    # Then it is not "taken over": the run is still running, with no error
    assert sql.execute("SELECT status, error FROM compaction_runs WHERE id = %s", (run,)).fetchone() == (
        "running",
        None,
    )
