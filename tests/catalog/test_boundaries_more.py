"""More of the catalog's promised numbers, just inside and just outside, in the SQL functions that
enforce them, with the values the deployed functions pass (Settings' defaults):

- the daily drain claims in pages of 1,000 (claim_pending_datasets takes at most 1,000 a call);
- a dataset whose runs failed n times in a row waits min(30 min x 2^(n-1), 7 days);
- a run's lease lasts 15 minutes (900 s) unless renewed;
- at most 100 Compact invocations at once (the budget), of which scheduled runs leave 10 to
  manual and realtime ones (admit_run, with the policy the consumer passes).
"""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument
from fusou_compaction.logic.scheduled import CLAIM_PAGE_LIMIT
from fusou_compaction.settings import Settings

from .conftest import World
from .test_retry_backoff import failed_ago, pending

DEFAULTS = Settings(catalog_transport="postgres", database_url="postgresql://unused")
WEEK = 7 * 86_400


def test_a_claim_of_a_full_page_of_1000_is_taken_and_1001_is_refused(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given 1,001 pending datasets (registered in SQL: the claim reads only the catalog)
    owner = uuid4()
    sql.execute(
        "INSERT INTO datasets (id, owner_id, compaction_needed) SELECT gen_random_uuid(), %s, true"
        " FROM generate_series(1, 1001)",
        (owner,),
    )
    assert CLAIM_PAGE_LIMIT == DEFAULTS.scheduled_page_size == 1000
    # When the drain asks for one page more than the limit, Then the catalog refuses it
    with pytest.raises(InvalidCatalogArgument):
        catalog.claim_pending_datasets(limit=CLAIM_PAGE_LIMIT + 1, claimer="drain")
    # When it asks for a page of exactly 1,000, Then it gets 1,000, and the 1,001st is left for the next page
    assert len(catalog.claim_pending_datasets(limit=CLAIM_PAGE_LIMIT, claimer="drain")) == 1000
    assert len(catalog.claim_pending_datasets(limit=CLAIM_PAGE_LIMIT, claimer="drain")) >= 1


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (1, 1800),  # 30 min
        (2, 3600),
        (9, 1800 * 256),  # 5.3 days: the last doubling under the cap
        (10, WEEK),  # 1800 x 512 = 10.7 days, capped at 7
        (40, WEEK),
    ],
)
def test_the_deployed_backoff_is_30_minutes_doubling_up_to_7_days(
    catalog: Catalog, sql: psycopg.Connection, failures: int, delay: int
) -> None:
    # Given the backoff the scheduled function passes (FUSOU_RETRY_BACKOFF_* defaults)
    backoff = DEFAULTS.retry_backoff
    assert (backoff.base_seconds, backoff.max_seconds) == (1800, WEEK)
    assert backoff.delay_seconds(failures) == delay
    (w,) = pending(catalog, 1)
    # When the dataset's last failure is 2 s short of the delay, Then it is not claimed
    failed_ago(sql, w, failures=failures, seconds_ago=delay - 2)
    assert catalog.claim_pending_datasets(limit=10, claimer="cron", backoff=backoff) == []
    # When it is 2 s past, Then it is
    failed_ago(sql, w, failures=failures, seconds_ago=delay + 2)
    assert catalog.claim_pending_datasets(limit=10, claimer="cron", backoff=backoff) == [w.dataset]


@pytest.mark.parametrize(("aged", "taken"), [(899, False), (901, True)])
def test_a_default_lease_lasts_15_minutes(world: World, sql: psycopg.Connection, aged: int, taken: bool) -> None:
    # Given a run holding the dataset's lease for the deployed FUSOU_LEASE_SECONDS
    assert DEFAULTS.lease_seconds == 900
    world.fragment()
    holder = world.running_run(lease_seconds=DEFAULTS.lease_seconds)
    (left,) = sql.execute(
        "SELECT extract(epoch FROM lease_expires_at - now()) FROM datasets WHERE id = %s", (world.dataset,)
    ).fetchone()  # type: ignore[misc]
    assert 895 <= float(left) <= 900
    # When 899 s or 901 s of it have passed (the clock moved in SQL)
    sql.execute(
        "UPDATE datasets SET lease_expires_at = lease_expires_at - make_interval(secs => %s) WHERE id = %s",
        (aged + float(left) - 900, world.dataset),
    )
    other = uuid4()
    world.catalog.begin_run(run_id=other, dataset_id=world.dataset, trigger="manual")
    got = world.catalog.acquire_lease(dataset_id=world.dataset, run_id=other, lease_seconds=DEFAULTS.lease_seconds)
    # Then another run takes it over only after 900 s
    assert got.acquired is taken
    assert world.catalog.get_dataset(world.dataset).lease_owner == (other if taken else holder)


def test_the_deployed_budget_admits_90_scheduled_runs_then_10_manual_ones_and_no_more(catalog: Catalog) -> None:
    # Given the policy the consumer passes (a budget of 100, 10 kept for manual and realtime work)
    policy = DEFAULTS.admission
    assert (policy.budget, policy.reserve) == (100, 10)

    def admit(priority: str) -> bool:
        w = World(catalog, owner=uuid4(), dataset=uuid4())
        w.fragment()  # one small fragment: a run of weight 1
        got = catalog.admit_run(run_id=uuid4(), dataset_id=w.dataset, priority=priority, policy=policy)
        assert got.weight == 1
        return got.admitted

    # When 90 scheduled runs ask, Then all are admitted; the 91st is refused (91 > 100 - 10)
    assert all(admit("scheduled") for _ in range(90))
    assert not admit("scheduled")
    # When manual and realtime runs ask, Then 10 more are admitted (100 = the budget), the 11th is not
    assert all(admit("manual" if i % 2 else "realtime") for i in range(10))
    assert not admit("manual")
    assert catalog.admission_status()["weight"] == 100
