"""logic/scheduled.py: what mutation testing (make mutate MODULE=logic.scheduled) found untested.

The daily run's own tests go through the local stack (and take minutes); here its parts run
against a real catalog and the S3 emulator, with queues that keep what they were sent and a
clock that says exactly how much time is left: the drain's pages, claims and messages,
housekeeping's garbage, sweeps and time budget, the run's continuation, and its report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import LeaseNotHeld
from fusou_compaction.catalog.models import RetryBackoff
from fusou_compaction.handlers.deps import Dependencies
from fusou_compaction.logic.orphans import OrphanReport
from fusou_compaction.logic.presigned import StrandedReport
from fusou_compaction.logic.scheduled import (
    DrainReport,
    HousekeepingReport,
    ScheduledReport,
    claim_and_enqueue,
    continuation_event,
    continuation_of,
    drain_backlog,
    housekeeping,
    housekeeping_pending,
    scheduled_run,
)
from fusou_compaction.ports.inventory import InventoryFile, InventoryReport
from fusou_compaction.ports.messaging import BatchEntry, BatchSendResult, Queue
from fusou_compaction.ports.object_store import ObjectInfo
from fusou_compaction.settings import Settings

from .conftest import pending, upload_fragments

WHEN = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # the EventBridge event's time


def _forever() -> float:
    return math.inf


def clock(*looks: float, then: float = 10.0) -> Callable[[], float]:
    """Seconds left at each look, then ``then`` for every look after."""
    it = iter(looks)
    return lambda: next(it, then)


@dataclass
class KeptQueue:
    """A queue that keeps every message it accepts; it refuses the entries ``refuse`` says to."""

    url: str = "kept"
    refuse: Callable[[str], bool] = lambda _: False
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult:
        sent, failed = [], {}
        for e in entries:
            if self.refuse(e.id):
                failed[e.id] = "refused"
            else:
                sent.append(e.id)
                self.bodies.append(json.loads(e.body))
        return BatchSendResult(sent=sent, failed=failed)

    def datasets(self) -> list[UUID]:
        return [UUID(b["datasetId"]) for b in self.bodies]


def as_queue(q: KeptQueue) -> Queue:
    return cast(Queue, q)


def claims(sql: psycopg.Connection, ids: list[UUID]) -> dict[UUID, tuple[str | None, float | None]]:
    """Each dataset's claimer and how many seconds its claim has left."""
    rows = sql.execute(
        "SELECT id, claimed_by, extract(epoch FROM claim_expires_at - now())::float FROM datasets WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


# claim_and_enqueue ------------------------------------------------------------------------------
def test_each_claimed_dataset_is_sent_as_scheduled_work_with_the_triggers_time_in_the_wire_format(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given three pending datasets
    ids = pending(sql, 3)
    queue = KeptQueue()
    # When they are claimed and enqueued for the event of 02:00, with a claim of ten minutes
    report = claim_and_enqueue(catalog, as_queue(queue), limit=10, claimer="daily", claim_seconds=600, now=WHEN)
    # Then each is sent once, in claim order, as scheduled work triggered at 02:00, in the wire's names
    assert report.enqueued == ids and report.failed == {}
    assert queue.bodies == [
        {"datasetId": str(d), "triggeredAt": "2026-03-01T02:00:00Z", "priority": "scheduled"} for d in ids
    ]
    # And each claim is the claimer's for ten minutes (not the catalog's default hour)
    for claimer, left in claims(sql, ids).values():
        assert claimer == "daily" and left is not None and 500 < left <= 600


def test_without_a_time_the_message_says_when_it_was_sent_in_utc(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a pending dataset
    pending(sql, 1)
    queue = KeptQueue()
    before = datetime.now(UTC)
    # When it is enqueued with no trigger time
    claim_and_enqueue(catalog, as_queue(queue), limit=10, claimer="daily", claim_seconds=600)
    # Then the message carries the time it was sent, as a UTC time
    (body,) = queue.bodies
    sent_at = datetime.fromisoformat(body["triggeredAt"])
    assert sent_at.utcoffset() == timedelta(0) and sent_at >= before.replace(microsecond=0)


def test_a_refused_message_is_reported_and_its_dataset_released_for_the_next_claim(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given three pending datasets, and a queue that refuses the second one's message
    ids = pending(sql, 3)
    queue = KeptQueue(refuse=lambda d: d == str(ids[1]))
    # When they are claimed and enqueued
    report = claim_and_enqueue(catalog, as_queue(queue), limit=10, claimer="daily", claim_seconds=600, now=WHEN)
    # Then the other two are enqueued and the refused one is reported with the queue's reason
    assert report.enqueued == [ids[0], ids[2]] and report.failed == {ids[1]: "refused"}
    # And its claim is given back (the others stay claimed), so the next claim takes it again
    held = claims(sql, ids)
    assert held[ids[1]] == (None, None) and held[ids[0]][0] == held[ids[2]][0] == "daily"
    again = claim_and_enqueue(catalog, as_queue(KeptQueue()), limit=10, claimer="next", claim_seconds=600)
    assert again.enqueued == [ids[1]]


# drain_backlog ----------------------------------------------------------------------------------
def _drain(catalog: Catalog, queue: KeptQueue, **kw: Any) -> DrainReport:
    args: dict[str, Any] = {
        "claimer": "daily",
        "claim_seconds": 600,
        "time_left": _forever,
        "stop_with_seconds_left": 60,
        "page_size": 4,
        "now": WHEN,
    }
    return drain_backlog(catalog, as_queue(queue), **(args | kw))


def test_a_backlog_of_exactly_two_pages_is_drained_in_three_claims_the_last_one_empty(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given eight pending datasets and pages of four
    ids = pending(sql, 8)
    queue = KeptQueue()
    # When the backlog is drained
    report = _drain(catalog, queue)
    # Then both full pages are sent, and a third, empty claim says the backlog is drained
    assert report.enqueued == ids and queue.datasets() == ids and report.failed == {}
    assert (report.pages, report.drained, report.stalled) == (3, True, False)
    # And every one is claimed by the drain's claimer, for its claim time, triggered at the event's time
    assert all(c == "daily" and left is not None and 500 < left <= 600 for c, left in claims(sql, ids).values())
    assert {b["triggeredAt"] for b in queue.bodies} == {"2026-03-01T02:00:00Z"}


def test_a_full_page_with_a_refused_message_is_not_the_end_of_the_backlog(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given eight pending datasets, and a queue that refuses the second one's message once
    ids = pending(sql, 8)
    refused: list[UUID] = []

    def once(d: str) -> bool:
        if d == str(ids[1]) and not refused:
            refused.append(ids[1])
            return True
        return False

    queue = KeptQueue(refuse=once)
    # When the backlog is drained in pages of four
    report = _drain(catalog, queue)
    # Then the first page (three sent, one refused) is full: the drain goes on, and the refused
    # dataset, released, is claimed again and sent in the next page
    assert report.failed == {ids[1]: "refused"}
    assert sorted(report.enqueued) == sorted(ids) and report.enqueued[:3] == [ids[0], ids[2], ids[3]]
    assert (report.pages, report.drained) == (3, True)


def test_a_drain_with_exactly_its_reserve_left_claims_nothing(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a pending dataset, and exactly the reserve left
    ids = pending(sql, 1)
    queue = KeptQueue()
    # When the drain is asked to run
    report = _drain(catalog, queue, time_left=lambda: 60.0, stop_with_seconds_left=60)
    # Then it claims nothing and says the backlog is not drained
    assert (report.pages, report.enqueued, report.drained) == (0, [], False)
    assert claims(sql, ids)[ids[0]] == (None, None)


def test_a_queue_that_refuses_a_whole_page_stalls_the_drain_and_releases_the_page(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given eight pending datasets, and a queue that refuses everything
    ids = pending(sql, 8)
    queue = KeptQueue(refuse=lambda _: True)
    # When the backlog is drained in pages of four
    report = _drain(catalog, queue)
    # Then it stops after the first page, stalled, not drained, every claim released
    assert (report.pages, report.drained, report.stalled) == (1, False, True)
    assert report.enqueued == [] and report.failed == dict.fromkeys(ids[:4], "refused")
    assert all(c == (None, None) for c in claims(sql, ids).values())


def test_the_drain_claims_with_its_own_backoff(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a pending dataset whose last run failed a moment ago
    (broken,) = pending(sql, 1)
    sql.execute("UPDATE datasets SET consecutive_failures = 1, last_failed_at = now() WHERE id = %s", (broken,))
    queue = KeptQueue()
    # When the drain runs with a backoff of nothing (the catalog's default is half an hour)
    report = _drain(catalog, queue, backoff=RetryBackoff(base_seconds=0, max_seconds=0))
    # Then the dataset is due at once and is enqueued
    assert report.enqueued == [broken]


# housekeeping -----------------------------------------------------------------------------------
def _dataset(sql: psycopg.Connection) -> UUID:
    (d,) = pending(sql, 1)
    return d


def _garbage(sql: psycopg.Connection, store: S3ObjectStore | None, n: int) -> list[str]:
    """n replaced objects past their grace period (rows added two days ago: no dataset is touched)."""
    d = _dataset(sql)
    run = uuid4()
    object_keys = [keys.compacted_key(d, "battle", run, i) for i in range(n)]
    sql.execute(
        "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count,"
        " schema_fingerprint, added_at, removed_at, delete_after)"
        " SELECT %s, 'battle', 'compacted', k, 1, 1, 'fp', now() - interval '2 days',"
        " now() - interval '1 day', now() - interval '1 hour' FROM unnest(%s::text[]) AS k",
        (d, object_keys),
    )
    if store is not None:
        for k in object_keys:
            store.put(k, b"replaced")
    return object_keys


def _house(catalog: Catalog, store: Any, **kw: Any) -> HousekeepingReport:
    return housekeeping(catalog, store, orphan_min_age=timedelta(hours=6), **kw)


def test_housekeeping_frees_expired_leases_and_deletes_replaced_objects_past_their_grace(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given two datasets whose runs' leases ran out, and three replaced objects past their grace
    crashed = pending(sql, 2)
    sql.execute(
        "UPDATE datasets SET lease_owner = gen_random_uuid(), lease_expires_at = now() - interval '1 minute'"
        " WHERE id = ANY(%s)",
        (crashed,),
    )
    replaced = _garbage(sql, store, 3)
    # When housekeeping runs
    report = _house(catalog, store)
    # Then it reports both leases, deletes the three objects, and is finished
    assert report.expired_leases == 2
    assert report.garbage_deleted == 3 and report.garbage_finished and report.finished
    assert not any(store.exists(k) for k in replaced) and report.errors == []


def test_garbage_is_deleted_a_thousand_at_a_time_every_page_counted(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given 1,001 replaced objects past their grace (their rows only: deleting a missing key succeeds)
    _garbage(sql, None, 1001)
    # When housekeeping has time for one page only
    # the clock's looks: the first page, then out of time
    first = _house(catalog, store, time_left=clock(900.0))
    # Then it deleted a thousand and says the garbage is not finished, nor is housekeeping
    assert (first.garbage_deleted, first.garbage_finished, first.finished) == (1000, False, False)
    assert first.touched is None
    # When it runs again with time, from a fresh catalog state of 1,001 more
    _garbage(sql, None, 1001)
    second = _house(catalog, store)
    # Then both of its pages count: 1,002 (the one left before, and the new ones)
    assert (second.garbage_deleted, second.garbage_finished, second.finished) == (1002, True, True)


class FailingDeletes:
    """The store, but deleting ``failing`` keys fails (S3 answers with an error for each)."""

    def __init__(self, inner: S3ObjectStore, failing: set[str]) -> None:
        self.inner, self.failing = inner, failing

    def delete_many(self, keys_: list[str]) -> list[str]:
        self.inner.delete_many([k for k in keys_ if k not in self.failing])
        return [k for k in keys_ if k in self.failing]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_replaced_object_that_cannot_be_deleted_is_reported_kept_in_the_catalog_and_the_sweeps_go_on(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given three replaced objects past their grace, one of which S3 will not delete
    replaced = _garbage(sql, store, 3)
    failing = FailingDeletes(store, {replaced[1]})
    # When housekeeping runs
    report = _house(catalog, failing)
    # Then the other two are deleted and counted, the failure is named in the errors
    assert report.garbage_deleted == 2 and report.errors == ["could not delete 1 replaced objects"]
    assert store.exists(replaced[1]) and not store.exists(replaced[0])
    # And the object that stayed is still garbage for the next run
    assert [g.object_key for g in catalog.list_garbage()] == [replaced[1]]
    # And the orphan sweep still ran, and housekeeping finished
    assert report.touched is not None and report.touched.finished and report.finished


def test_housekeeping_with_exactly_its_reserve_left_does_nothing_more(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given replaced objects past their grace
    _garbage(sql, store, 2)
    # When housekeeping has exactly 30 s left (its default reserve)
    report = _house(catalog, store, time_left=lambda: 30.0)
    # Then it stops before the garbage, unfinished
    assert (report.garbage_deleted, report.garbage_finished, report.finished) == (0, False, False)
    assert report.touched is None


def test_the_default_owner_resumes_a_sweep_its_crashed_predecessor_left_under_lease(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a daily sweep whose lease an earlier housekeeping (default owner) still holds: it crashed
    assert catalog.begin_orphan_sweep(owner="housekeeping", lease_seconds=900, lookback_seconds=0).acquired
    # When housekeeping runs with its default owner
    report = _house(catalog, store)
    # Then it takes the sweep over and finishes it (another owner would find it busy)
    assert report.touched is not None and not report.touched.busy and report.touched.finished
    assert catalog.orphan_sweep_status()["touched"]["lease_owner"] is None


class LosesTheSweep:
    """The catalog, but the daily sweep's lease is lost under the invocation (it outlived it)."""

    def __init__(self, inner: Catalog) -> None:
        self.inner = inner

    def next_orphan_sweep_datasets(self, **_: Any) -> Any:
        raise LeaseNotHeld("the touched orphan sweep's lease is not held by housekeeping")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Reports:
    """S3 Inventory's reports, in memory: one report of one data file, these rows."""

    def __init__(self, rows: list[ObjectInfo], created_at: datetime | None = None) -> None:
        self.rows_ = rows
        self.newest_ = InventoryReport(
            key=f"inventory/{uuid4()}/manifest.json",
            created_at=created_at or datetime.now(UTC) - timedelta(hours=1),
            columns=("Bucket", "Key", "Size", "LastModifiedDate"),
            files=(InventoryFile("data/0.csv.gz", 1),),
        )

    def newest(self) -> InventoryReport | None:
        return self.newest_

    def report(self, key: str) -> InventoryReport:
        assert key == self.newest_.key
        return self.newest_

    def rows(self, report: InventoryReport, file: int) -> Iterator[ObjectInfo]:
        return iter(self.rows_)


def _orphan(store: S3ObjectStore) -> tuple[str, ObjectInfo]:
    """An object in a dataset the catalog never heard of, and the inventory's row for it."""
    key = keys.fragment_key(uuid4(), "battle", "e" * 64)
    store.put(key, b"orphan")
    info = store.head(key)
    assert info is not None
    return key, info


def test_a_daily_sweep_whose_lease_was_lost_is_left_to_its_holder_and_the_inventory_sweep_still_runs(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given an orphan the inventory lists
    key, row = _orphan(store)
    reports = Reports([row])
    # When housekeeping's daily sweep finds its lease gone
    report = housekeeping(
        cast(Catalog, LosesTheSweep(catalog)),
        store,
        orphan_min_age=timedelta(hours=6),
        inventory=reports,
        now=datetime.now(UTC) + timedelta(hours=7),
    )
    # Then the daily sweep is reported busy (whoever holds it goes on), the reason in the errors
    assert report.touched is not None and report.touched.busy
    assert report.touched.errors == report.errors == ["the touched orphan sweep's lease is not held by housekeeping"]
    # And the inventory sweep still ran and deleted the orphan; housekeeping is finished
    assert report.inventory is not None and report.inventory.deleted == 1 and not store.exists(key)
    assert report.finished


def test_both_sweeps_judge_age_by_housekeepings_time_and_the_inventory_sweep_by_its_owner_and_period(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a dataset just uploaded to, with an orphan beside its fragment, written just now
    up = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5)
    beside = keys.fragment_key(up.dataset, "battle", "c" * 64)
    store.put(beside, b"orphan")
    # And an orphan written just now, listed in a report an hour old, and an inventory sweep
    # last done two days before that report
    key, row = _orphan(store)
    reports = Reports([row])
    sql.execute(
        "UPDATE orphan_sweeps SET last_report = 'inventory/old/manifest.json',"
        " last_report_created_at = now() - interval '2 days' WHERE sweep = 'inventory'"
    )
    # When housekeeping runs seven hours from now, reconciling at most once a day, as "daily"
    report = housekeeping(
        catalog,
        store,
        orphan_min_age=timedelta(hours=6),
        inventory=reports,
        reconcile_every=timedelta(days=1),
        owner="daily",
        now=datetime.now(UTC) + timedelta(hours=7),
    )
    # Then the daily sweep deletes the orphan beside the fragment, past six hours by then
    assert report.touched is not None and report.touched.deleted == 1 and not store.exists(beside)
    # And the report is due, and its orphan, past six hours by then, is deleted
    assert report.inventory is not None and report.inventory.report == reports.newest_.key
    assert report.inventory.deleted == 1 and not store.exists(key) and report.finished
    # And "daily" gave the sweep back when done
    assert catalog.orphan_sweep_status()["inventory"]["lease_owner"] is None


def test_the_inventory_sweep_stops_at_housekeepings_reserve(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given a report of 1,000 keys that are not ours (the sweep looks at the clock every 1,000 rows)
    reports = Reports([ObjectInfo(f"exports/{i}.csv", 1, datetime.now(UTC) - timedelta(days=1)) for i in range(1000)])
    # When housekeeping has 100 s left until the inventory sweep's first look, then 40 s, with a
    # reserve of 50 s
    looks = [100.0] * 4  # garbage, the daily sweep's lease and round, housekeeping's look before the inventory
    report = _house(catalog, store, inventory=reports, time_left=clock(*looks, then=40.0), stop_with_seconds_left=50)
    # Then the inventory sweep stopped at its look, its place kept, and housekeeping is unfinished
    assert report.inventory is not None and not report.inventory.finished and report.inventory.examined == 1000
    assert not report.finished and catalog.orphan_sweep_status()["inventory"]["rows"] == 1000


def test_housekeeping_out_of_time_after_the_daily_sweep_leaves_the_inventory_for_later(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given an inventory report
    reports = Reports([])
    # When the daily sweep finishes with exactly the reserve left
    report = _house(catalog, store, inventory=reports, time_left=clock(900.0, 900.0, 900.0, then=30.0))
    # Then the inventory sweep is not begun, and housekeeping is unfinished
    assert report.touched is not None and report.touched.finished
    assert report.inventory is None and not report.finished


# The report -------------------------------------------------------------------------------------
def test_the_report_of_a_sequel_without_housekeeping() -> None:
    a, b = uuid4(), uuid4()
    drain = DrainReport(enqueued=[a], failed={b: "refused"}, pages=2, drained=True)
    assert ScheduledReport(drain=drain, hop=3).to_json_dict() == {
        "enqueued": [str(a)],
        "failed": {str(b): "refused"},
        "pages": 2,
        "drained": True,
        "continuation": 3,
        "continued": False,
        "expiredLeases": 0,
        "garbageDeleted": 0,
        "orphansDeleted": 0,
        "housekeepingFinished": None,
        "orphanSweep": {"touched": None, "inventory": None},
        "strandedUploadsResent": 0,
        "errors": [],
    }


def test_the_report_of_a_first_invocation_with_housekeeping_and_stranded_uploads() -> None:
    touched = OrphanReport(swept_datasets=2, deleted=3, finished=True)
    inventory = OrphanReport(deleted=4, report="r/manifest.json", unknown=1, unknown_sample=["x"])
    house = HousekeepingReport(
        expired_leases=5, garbage_deleted=6, touched=touched, inventory=inventory, errors=["h"], finished=False
    )
    stranded = StrandedReport(resent=["staging/a", "staging/b"], errors=["s"])
    report = ScheduledReport(drain=DrainReport(), hop=0, house=house, stranded=stranded, continue_later=True)
    got = report.to_json_dict()
    assert got == {
        "enqueued": [],
        "failed": {},
        "pages": 0,
        "drained": False,
        "continuation": 0,
        "continued": True,
        "expiredLeases": 5,
        "garbageDeleted": 6,
        "orphansDeleted": 7,
        "housekeepingFinished": False,
        "orphanSweep": {"touched": touched.to_json_dict(), "inventory": inventory.to_json_dict()},
        "strandedUploadsResent": 2,
        "errors": ["s", "h"],
    }
    assert report.housekeeping_left


# The continuation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("detail", "hop"),
    [
        (None, 0),
        ({}, 0),
        ({"continuation": 0}, 0),
        ({"continuation": 3}, 3),
        ({"continuation": -1}, 0),
        ({"continuation": "2"}, 0),
    ],
)
def test_the_hop_is_read_from_the_events_detail(detail: dict[str, Any] | None, hop: int) -> None:
    assert continuation_of(detail) == hop


@pytest.mark.parametrize(
    ("detail", "pending_"),
    [
        (None, True),
        ({"continuation": 0}, True),
        ({"continuation": 1}, False),
        ({"continuation": 1, "housekeeping": True}, True),
        ({"continuation": 1, "housekeeping": False}, False),
        ({"continuation": 1, "housekeeping": "true"}, False),
    ],
)
def test_housekeeping_is_done_by_the_first_invocation_and_by_a_sequel_told_so(
    detail: dict[str, Any] | None, pending_: bool
) -> None:
    assert housekeeping_pending(detail) is pending_


def test_a_sequels_event_is_the_same_event_with_its_hop_and_housekeeping_added() -> None:
    event = {"id": "e-1", "time": "2026-03-01T02:00:00Z", "detail": {"note": "kept"}}
    assert continuation_event(event, 2) == {
        "id": "e-1",
        "time": "2026-03-01T02:00:00Z",
        "detail": {"note": "kept", "continuation": 2, "housekeeping": False},
    }
    assert continuation_event({"id": "e-2", "detail": None}, 1, housekeeping=True) == {
        "id": "e-2",
        "detail": {"continuation": 1, "housekeeping": True},
    }


# scheduled_run ----------------------------------------------------------------------------------
SETTINGS = {
    "catalog_transport": "postgres",
    "database_url": "postgresql://unused",
    "claim_seconds": 600,
    "scheduled_page_size": 2,
    "scheduled_drain_reserve_seconds": 240,
    "scheduled_max_continuations": 2,
    "retry_backoff_base_seconds": 0,
    "retry_backoff_max_seconds": 0,
    "orphan_min_age_seconds": 0,
    "orphan_reconcile_every_days": 1,
    "staging_min_age_seconds": 0,
}


@dataclass
class Run:
    deps: Dependencies
    main: KeptQueue
    scheduled: KeptQueue
    register_retry: KeptQueue
    reports: Reports


@pytest.fixture
def run(catalog: Catalog, store: S3ObjectStore) -> Run:
    main, scheduled, retry = KeptQueue("main"), KeptQueue("scheduled"), KeptQueue("register-retry")
    reports = Reports([])
    deps = Dependencies(
        settings=Settings(**SETTINGS),  # type: ignore[arg-type]
        catalog=catalog,
        store=store,
        queue=as_queue(main),
        dlq=cast(Any, None),
        orchestrator=cast(Any, None),
        alerts=cast(Any, None),
        register_retry=as_queue(retry),
        scheduled_queue=as_queue(scheduled),
        inventory=reports,
    )
    return Run(deps, main, scheduled, retry, reports)


def test_the_first_invocation_resends_stranded_uploads_drains_into_the_low_priority_queue_and_keeps_house(
    run: Run, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given five pending datasets, one of which failed a moment ago (the run's backoff: none)
    ids = pending(sql, 5)
    sql.execute("UPDATE datasets SET consecutive_failures = 1, last_failed_at = now() WHERE id = %s", (ids[0],))
    # And a presigned upload stranded in staging, a dataset just uploaded to with an orphan beside
    # its fragment, and an inventory report due (the last one two days old)
    staged = keys.staging_key(uuid4(), "battle", uuid4())
    store.put(staged, b"stranded")
    up = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5)
    orphan = keys.fragment_key(up.dataset, "battle", "d" * 64)
    store.put(orphan, b"orphan")
    sql.execute(
        "UPDATE orphan_sweeps SET last_report = 'inventory/old/manifest.json',"
        " last_report_created_at = now() - interval '2 days' WHERE sweep = 'inventory'"
    )
    # When the daily run's first invocation comes, for the event of 02:00, with plenty of time
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=0, time_left=lambda: 900.0, now=WHEN)
    # Then the stranded upload went back to the register function
    assert report.stranded is not None and report.stranded.resent == [staged]
    assert len(run.register_retry.bodies) == 1
    # And every pending dataset went to the low-priority queue in pages of two, claimed by the
    # run for its claim time, triggered at 02:00; none to the main queue
    assert sorted(run.scheduled.datasets()) == sorted([*ids, up.dataset]) and run.main.bodies == []
    assert report.drain.drained and report.drain.pages == 4
    assert {b["triggeredAt"] for b in run.scheduled.bodies} == {"2026-03-01T02:00:00Z"}
    for claimer, left in claims(sql, ids).values():
        assert claimer == "scheduled:e-1" and left is not None and 500 < left <= 600
    # And housekeeping ran: the orphan (no minimum age here) is gone, the fragment stays, and the
    # due inventory report was read
    assert report.house is not None and report.house.finished
    assert not store.exists(orphan) and store.exists(catalog.list_live_files(up.dataset)[0].object_key)
    assert report.house.inventory is not None and report.house.inventory.report == run.reports.newest_.key
    # And nothing is left: no sequel
    assert (report.hop, report.continue_later) == (0, False)


def test_a_sequel_neither_resends_uploads_nor_keeps_house_and_drains_until_30_s_are_left(
    run: Run, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given three pending datasets, and an upload stranded in staging
    ids = pending(sql, 3)
    store.put(keys.staging_key(uuid4(), "battle", uuid4()), b"stranded")
    # When a sequel comes with 31 s left
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=1, time_left=lambda: 31.0, now=WHEN)
    # Then it drains (it keeps no time for housekeeping, only the last 30 s), and does nothing else
    assert sorted(report.drain.enqueued) == sorted(ids) and report.drain.drained
    assert report.stranded is None and run.register_retry.bodies == []
    assert report.house is None and not report.housekeeping_left
    assert (report.hop, report.continue_later) == (1, False)


def test_a_sequel_told_to_keep_house_does(run: Run) -> None:
    # When a sequel comes with housekeeping left by the invocation before
    report = scheduled_run(
        run.deps, claimer="scheduled:e-1", hop=1, time_left=lambda: 900.0, now=WHEN, with_housekeeping=True
    )
    # Then it keeps house (and still resends nothing)
    assert report.house is not None and report.house.finished and report.stranded is None


def test_the_first_invocation_leaves_its_reserve_to_housekeeping_and_continues_the_drain_later(
    run: Run, sql: psycopg.Connection
) -> None:
    # Given pending datasets, and 100 s left: under the drain's reserve of 240 s
    ids = pending(sql, 3)
    # When the first invocation comes
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=0, time_left=lambda: 100.0, now=WHEN)
    # Then it claims nothing, keeps house in the time left, and continues later
    assert report.drain.pages == 0 and all(c == (None, None) for c in claims(sql, ids).values())
    assert report.house is not None and report.house.finished
    assert report.continue_later is True


def test_unfinished_housekeeping_alone_continues_the_run(run: Run, sql: psycopg.Connection) -> None:
    # Given a pending dataset
    pending(sql, 1)
    # When the drain has time (300 s), then housekeeping has less than its 30 s
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=0, time_left=clock(300.0, then=20.0), now=WHEN)
    # Then the backlog is drained, housekeeping is not finished, and the run continues
    assert report.drain.drained and report.house is not None and not report.house.finished
    assert report.house.touched is None and report.housekeeping_left
    assert report.continue_later is True


def test_the_sweeps_of_a_run_are_owned_by_its_claimer(run: Run, catalog: Catalog) -> None:
    # Given the daily sweep's lease held by an earlier invocation of this run, which crashed
    assert catalog.begin_orphan_sweep(owner="scheduled:e-1", lease_seconds=900, lookback_seconds=0).acquired
    # When the run's sequel keeps house
    report = scheduled_run(
        run.deps, claimer="scheduled:e-1", hop=1, time_left=lambda: 900.0, now=WHEN, with_housekeeping=True
    )
    # Then it resumes the sweep as its own
    assert report.house is not None and report.house.touched is not None
    assert report.house.touched.finished and not report.house.touched.busy


def test_a_stalled_drain_does_not_continue_the_run(run: Run, sql: psycopg.Connection) -> None:
    # Given pending datasets, and a low-priority queue that refuses everything
    pending(sql, 3)
    run.scheduled.refuse = lambda _: True
    # When the first invocation comes
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=0, time_left=lambda: 900.0, now=WHEN)
    # Then the drain stalled, housekeeping finished, and the run does not continue
    assert report.drain.stalled and report.house is not None and report.house.finished
    assert report.continue_later is False


def test_without_a_low_priority_queue_the_drain_goes_to_the_main_queue(run: Run, sql: psycopg.Connection) -> None:
    ids = pending(sql, 1)
    run.deps.scheduled_queue = None
    scheduled_run(run.deps, claimer="scheduled:e-1", hop=1, time_left=lambda: 900.0, now=WHEN)
    assert run.main.datasets() == ids


@pytest.mark.parametrize(("hop", "continues"), [(1, True), (2, False)])
def test_the_run_continues_at_most_scheduled_max_continuations_times(
    run: Run, sql: psycopg.Connection, hop: int, continues: bool
) -> None:
    # Given a pending dataset, and a sequel with no time to drain it (30 s: its last reserve)
    pending(sql, 1)
    # When sequel number hop comes (at most 2 are allowed)
    report = scheduled_run(run.deps, claimer="scheduled:e-1", hop=hop, time_left=lambda: 30.0, now=WHEN)
    # Then only one before the last continues
    assert not report.drain.drained and report.continue_later is continues
