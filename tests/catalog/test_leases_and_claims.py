"""Leases (one run per dataset) and scheduler claims (never enqueue a dataset twice)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, InvalidCatalogArgument

from .conftest import World


def test_a_free_dataset_is_leased_once_and_renewed_by_its_holder(world: World) -> None:
    world.fragment()
    a, b = uuid4(), uuid4()
    first = world.catalog.acquire_lease(dataset_id=world.dataset, run_id=a, lease_seconds=60)
    second = world.catalog.acquire_lease(dataset_id=world.dataset, run_id=b, lease_seconds=60)
    renewed = world.catalog.acquire_lease(dataset_id=world.dataset, run_id=a, lease_seconds=600)
    assert first.acquired and not second.acquired and renewed.acquired
    assert second.dataset.lease_owner == a
    assert renewed.dataset.lease_expires_at > first.dataset.lease_expires_at  # type: ignore[operator]


def test_an_expired_lease_is_taken_over(world: World, sql: psycopg.Connection) -> None:
    # Given a run whose lease has expired (it crashed)
    world.fragment()
    crashed, fresh = uuid4(), uuid4()
    world.catalog.acquire_lease(dataset_id=world.dataset, run_id=crashed, lease_seconds=60)
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    # When another run asks, Then it gets the lease
    assert world.catalog.acquire_lease(dataset_id=world.dataset, run_id=fresh, lease_seconds=60).acquired


def test_leasing_an_unknown_dataset_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(CatalogNotFound):
        catalog.acquire_lease(dataset_id=uuid4(), run_id=uuid4(), lease_seconds=60)


def test_only_the_holder_releases_the_lease(world: World) -> None:
    world.fragment()
    holder = uuid4()
    world.catalog.acquire_lease(dataset_id=world.dataset, run_id=holder, lease_seconds=60)
    assert not world.catalog.release_lease(dataset_id=world.dataset, run_id=uuid4())
    assert world.catalog.release_lease(dataset_id=world.dataset, run_id=holder)
    assert world.catalog.get_dataset(world.dataset).lease_owner is None


def test_racing_runs_get_exactly_one_lease(world: World) -> None:
    world.fragment()
    barrier = threading.Barrier(6)

    def race(_: int) -> bool:
        barrier.wait()
        return world.catalog.acquire_lease(dataset_id=world.dataset, run_id=uuid4(), lease_seconds=60).acquired

    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(race, range(6))) == [False] * 5 + [True]


def _pending_datasets(catalog: Catalog, n: int) -> list[World]:
    worlds = [World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(n)]
    for w in worlds:
        w.fragment()
    return worlds


def test_claim_takes_pending_datasets_oldest_first_up_to_the_limit(catalog: Catalog) -> None:
    worlds = _pending_datasets(catalog, 5)
    claimed = catalog.claim_pending_datasets(limit=3, claimer="cron-1")
    assert claimed == [w.dataset for w in worlds[:3]]


def test_a_claimed_dataset_is_not_claimed_again_by_a_later_trigger(catalog: Catalog) -> None:
    _pending_datasets(catalog, 3)
    first = catalog.claim_pending_datasets(limit=10, claimer="cron-1")
    second = catalog.claim_pending_datasets(limit=10, claimer="cron-2")
    assert len(first) == 3 and second == []


def test_concurrent_claimers_get_disjoint_sets(catalog: Catalog, database_url: str) -> None:
    # Given 20 pending datasets and two claimers holding their transactions open at once
    worlds = _pending_datasets(catalog, 20)
    with psycopg.connect(database_url) as c1, psycopg.connect(database_url) as c2:
        a = c1.execute("SELECT claim_pending_datasets(12, 'a', 3600)").fetchone()[0]  # type: ignore[index]
        b = c2.execute("SELECT claim_pending_datasets(12, 'b', 3600)").fetchone()[0]  # type: ignore[index]
        c1.commit()
        c2.commit()
    # Then no dataset was claimed twice and all were claimed
    assert not set(a) & set(b)
    assert {str(w.dataset) for w in worlds} == set(a) | set(b)


def test_released_claims_are_claimable_again(catalog: Catalog) -> None:
    _pending_datasets(catalog, 2)
    claimed = catalog.claim_pending_datasets(limit=10, claimer="cron-1")
    assert catalog.release_claims(claimed[:1], "someone-else") == 0
    assert catalog.release_claims(claimed[:1], "cron-1") == 1
    assert catalog.claim_pending_datasets(limit=10, claimer="cron-2") == claimed[:1]


def test_a_leased_dataset_is_not_claimed(catalog: Catalog) -> None:
    (w,) = _pending_datasets(catalog, 1)
    catalog.acquire_lease(dataset_id=w.dataset, run_id=uuid4(), lease_seconds=60)
    assert catalog.claim_pending_datasets(limit=10, claimer="cron") == []


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_claim_limit_is_validated(catalog: Catalog, limit: int) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.claim_pending_datasets(limit=limit, claimer="cron")


def test_taking_over_an_expired_lease_fails_the_crashed_run(world: World, sql: psycopg.Connection) -> None:
    # Given a running run whose lease expired
    world.fragment()
    crashed = world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    # When another run takes the lease over
    world.catalog.acquire_lease(dataset_id=world.dataset, run_id=uuid4(), lease_seconds=60)
    # Then the crashed run is failed (so its outputs count as orphans)
    runs = {r.id: r for r in world.catalog.dataset_status(world.dataset).runs}
    assert runs[crashed].status == "failed" and "taken over" in (runs[crashed].error or "")
