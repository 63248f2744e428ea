"""sweep_expired_leases' conditions that mutation testing (make mutate-sql) found untested."""

from __future__ import annotations

import time

import psycopg

from .conftest import World


def _sweep(conn: psycopg.Connection) -> list:  # type: ignore[type-arg]
    row = conn.execute("SELECT sweep_expired_leases()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_lease_ending_at_this_very_moment_is_left_to_the_next_sweep(world: World, sql: psycopg.Connection) -> None:
    # Given a lease that ends exactly now (the transaction's now): the sweep frees leases whose end
    # is past, strictly (acquire_lease already lets another run take this one over)
    world.fragment()
    world.running_run()
    with sql.transaction():
        sql.execute("UPDATE datasets SET lease_expires_at = now()")
        assert _sweep(sql) == []
        sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 microsecond'")
        assert len(_sweep(sql)) == 1


def test_the_sweep_skips_a_dataset_another_transaction_holds_instead_of_waiting(
    world: World, database_url: str, sql: psycopg.Connection
) -> None:
    # Given an expired lease on a dataset whose row another transaction holds (a commit under way)
    world.fragment()
    world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 minute'")
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM datasets FOR UPDATE")
        # When the sweep runs (given 2 s at most)
        with psycopg.connect(database_url, autocommit=True) as sweeper:
            sweeper.execute("SET statement_timeout = '2s'")
            started = time.monotonic()
            swept = _sweep(sweeper)
        # Then it returned at once, without that dataset (the next sweep gets it)
        assert swept == [] and time.monotonic() - started < 1.5
        holder.rollback()
    assert len(_sweep(sql)) == 1
