"""sweep_expired_leases' and list_garbage's conditions that mutation testing (make mutate-sql) found untested."""

from __future__ import annotations

import time
from uuid import uuid4

import psycopg

from fusou_compaction.catalog.client import Catalog

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


def test_the_sweep_fails_only_the_runs_whose_leases_expired(world: World, sql: psycopg.Connection) -> None:
    # Given a run whose lease expired, and a running run of another dataset whose lease is live
    world.fragment()
    crashed = world.running_run()
    other = World(world.catalog, owner=world.owner, dataset=uuid4())
    other.fragment()
    alive = other.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 minute' WHERE id = %s", (world.dataset,))
    # When the sweep runs
    assert [d["run_id"] for d in _sweep(sql)] == [str(crashed)]
    # Then only the crashed run failed
    status = "SELECT status FROM compaction_runs WHERE id = %s"
    assert sql.execute(status, (crashed,)).fetchone() == ("failed",)
    assert sql.execute(status, (alive,)).fetchone() == ("running",)


def test_a_claim_ending_at_this_very_moment_is_left_to_the_next_sweep(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given a claimed dataset whose claim ends exactly now (claim_pending_datasets does not
    # reclaim it either: a claim is over once its end is past)
    w = World(catalog, owner=uuid4(), dataset=uuid4())
    w.fragment()
    assert catalog.claim_pending_datasets(limit=5, claimer="a") == [w.dataset]
    with sql.transaction():
        sql.execute("UPDATE datasets SET claim_expires_at = now()")
        _sweep(sql)
        assert sql.execute("SELECT claimed_by FROM datasets").fetchone() == ("a",)
        sql.execute("UPDATE datasets SET claim_expires_at = now() - interval '1 microsecond'")
        _sweep(sql)
        assert sql.execute("SELECT claimed_by FROM datasets").fetchone() == (None,)


def test_a_replaced_object_is_garbage_at_the_very_moment_its_grace_period_ends(
    world: World, sql: psycopg.Connection
) -> None:
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
    )
    with sql.transaction():
        sql.execute("UPDATE dataset_files SET delete_after = now() WHERE removed_at IS NOT NULL")
        row = sql.execute("SELECT list_garbage()").fetchone()
    assert row is not None and {g["id"] for g in row[0]} == {str(f.id) for f in frags}
