"""Fair retries (migration 0007): a dataset whose run failed backs off, exponentially and capped,
and is claimed after the datasets that did not fail. The clock is arranged in SQL (last_failed_at)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument
from fusou_compaction.catalog.models import RetryBackoff

from .conftest import World

BACKOFF = RetryBackoff(base_seconds=60, max_seconds=600)


def pending(catalog: Catalog, n: int) -> list[World]:
    worlds = [World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(n)]
    for w in worlds:
        w.fragment()
    return worlds


def fail_once(w: World) -> UUID:
    run = w.running_run()
    w.catalog.record_run_status(run, "failed", {"error_step": "Compact", "error": "boom"})
    return run


def failed_ago(sql: psycopg.Connection, w: World, *, failures: int, seconds_ago: float) -> None:
    """Arrange the dataset's failure record: ``failures`` in a row, the last ``seconds_ago``."""
    sql.execute(
        "UPDATE datasets SET consecutive_failures = %s, last_failed_at = now() - make_interval(secs => %s)"
        " WHERE id = %s",
        (failures, seconds_ago, w.dataset),
    )


def claim(catalog: Catalog, limit: int = 100, claimer: str = "cron") -> list[UUID]:
    return catalog.claim_pending_datasets(limit=limit, claimer=claimer, backoff=BACKOFF)


def test_a_failed_run_makes_its_dataset_wait_out_the_backoff(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a pending dataset whose run just failed
    (w,) = pending(catalog, 1)
    fail_once(w)
    assert catalog.get_dataset(w.dataset).consecutive_failures == 1
    # When the scheduler claims within the backoff, Then it is not claimed
    assert claim(catalog) == []
    # When the base delay has passed, Then it is claimed
    failed_ago(sql, w, failures=1, seconds_ago=61)
    assert claim(catalog) == [w.dataset]


@pytest.mark.parametrize(("failures", "delay"), [(1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (40, 600)])
def test_the_backoff_doubles_with_each_failure_in_a_row_up_to_the_cap(
    catalog: Catalog, sql: psycopg.Connection, failures: int, delay: int
) -> None:
    # Given a dataset that failed `failures` times in a row
    (w,) = pending(catalog, 1)
    assert BACKOFF.delay_seconds(failures) == delay
    # When its last failure is a little less than the delay ago, Then it is not claimed
    failed_ago(sql, w, failures=failures, seconds_ago=delay - 5)
    assert claim(catalog) == []
    # When it is a little more, Then it is
    failed_ago(sql, w, failures=failures, seconds_ago=delay + 5)
    assert claim(catalog) == [w.dataset]


def test_datasets_that_did_not_fail_are_claimed_before_those_that_did(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given three older datasets that failed (their backoff over, the oldest due first) and three newer good ones
    broken = pending(catalog, 3)
    good = pending(catalog, 3)
    for i, w in enumerate(broken):
        failed_ago(sql, w, failures=1, seconds_ago=3600 - i)
    # When the scheduler claims four
    claimed = claim(catalog, limit=4)
    # Then every good one comes first, then the failed one due longest
    assert claimed == [w.dataset for w in good] + [broken[0].dataset]


def test_every_way_a_run_fails_counts_and_a_commit_resets(world: World, sql: psycopg.Connection) -> None:
    catalog = world.catalog
    world.fragment()

    def failures() -> int:
        return catalog.get_dataset(world.dataset).consecutive_failures

    # Given a run failed by the failure path
    fail_once(world)
    assert failures() == 1
    # When a run is failed by the DLQ's record (once, even if recorded twice)
    run = world.running_run()
    for _ in range(2):
        catalog.record_failure(source="dlq", error="x", message_id="m-1", dataset_id=world.dataset, run_id=run)
    assert failures() == 2
    # When a crashed run's lease expires and the sweep fails it
    world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    assert len(catalog.sweep_expired_leases()) == 1
    assert failures() == 3
    # When a crashed run's lease is taken over by a new run
    world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    fresh = world.running_run()
    assert failures() == 4
    assert catalog.get_dataset(world.dataset).last_failed_at is not None
    # Then a commit resets the record
    [frag] = catalog.list_live_files(world.dataset)
    catalog.commit_compaction(
        run_id=fresh, dataset_id=world.dataset, removed=[frag.id], outputs=[world.output_for(fresh, [frag])]
    )
    ds = catalog.get_dataset(world.dataset)
    assert (ds.consecutive_failures, ds.last_failed_at) == (0, None)


def test_a_skipped_run_changes_nothing(world: World) -> None:
    # Given a dataset that failed once
    world.fragment()
    fail_once(world)
    # When a later run is skipped (the lease was held elsewhere, or nothing to do)
    run = uuid4()
    world.catalog.begin_run(run_id=run, dataset_id=world.dataset, trigger="manual")
    world.catalog.record_run_status(run, "skipped", {"status_reason": "lease held"})
    # Then the dataset still counts one failure
    assert world.catalog.get_dataset(world.dataset).consecutive_failures == 1


def test_concurrent_claimers_get_disjoint_sets_and_never_a_dataset_still_backing_off(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given 20 good datasets, 10 whose backoff is over and 10 still backing off
    good, due, waiting = pending(catalog, 20), pending(catalog, 10), pending(catalog, 10)
    for w in due:
        failed_ago(sql, w, failures=2, seconds_ago=121)
    for w in waiting:
        failed_ago(sql, w, failures=2, seconds_ago=100)
    barrier = threading.Barrier(8)

    def race(i: int) -> list[UUID]:
        barrier.wait()
        return claim(catalog, limit=5, claimer=f"cron-{i}")

    # When eight claimers of five each race
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, range(8)))
    claimed = [d for r in results for d in r]
    # Then no dataset is claimed twice, all good and due ones are claimed, none still waiting
    assert len(claimed) == len(set(claimed)) == 30
    assert set(claimed) == {w.dataset for w in good + due}
    # And within each claimer's answer the good ones come first
    is_good = {w.dataset for w in good}
    for r in results:
        flags = [d in is_good for d in r]
        assert flags == sorted(flags, reverse=True)


def test_a_claim_skips_a_dataset_whose_failure_is_being_recorded(
    catalog: Catalog, database_url: str, sql: psycopg.Connection
) -> None:
    # Given two pending datasets, and a run of the first being failed in a transaction still open
    first, second = pending(catalog, 2)
    run = first.running_run()
    sql.execute("UPDATE datasets SET lease_owner = NULL, lease_expires_at = NULL WHERE id = %s", (first.dataset,))
    with psycopg.connect(database_url) as failing:
        failing.execute("SELECT record_run_status(%s, 'failed', '{}'::jsonb)", (run,))
        # When the scheduler claims meanwhile, Then it neither waits nor takes the dataset being failed
        assert claim(catalog) == [second.dataset]
        failing.commit()
    # When the failure is committed, Then the dataset backs off
    assert claim(catalog, claimer="cron-2") == []
    assert catalog.get_dataset(first.dataset).consecutive_failures == 1


def test_a_caller_of_the_old_signature_gets_the_default_backoff(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a dataset that failed 10 minutes ago (the default base is 30 minutes) and a good one
    broken, good = pending(catalog, 2)
    failed_ago(sql, broken, failures=1, seconds_ago=600)
    # When the 0002 signature is called, as an older deployment would
    got = sql.execute("SELECT claim_pending_datasets(p_limit => 10, p_claimer => 'old', p_claim_seconds => 60)")
    # Then only the good one is claimed
    assert got.fetchone() == ([str(good.dataset)],)


@pytest.mark.parametrize(("base", "cap"), [(-1, 10), (10, 5)])
def test_a_nonsensical_backoff_is_refused(catalog: Catalog, base: int, cap: int) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.claim_pending_datasets(
            limit=1, claimer="cron", backoff=RetryBackoff.model_construct(base_seconds=base, max_seconds=cap)
        )
