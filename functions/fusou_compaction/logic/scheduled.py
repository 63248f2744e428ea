"""The scheduled run: claim pending datasets and enqueue them; sweep leases and garbage."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import RetryBackoff
from fusou_compaction.pipeline.models import CompactionMessage, Priority
from fusou_compaction.ports.messaging import BatchEntry, Queue
from fusou_compaction.ports.object_store import ObjectStore

if TYPE_CHECKING:
    from fusou_compaction.handlers.deps import Dependencies
    from fusou_compaction.logic.presigned import StrandedReport

CONTINUATION_KEY = "continuation"  # in the EventBridge event's detail: how many invocations came before

FIND_ORPHANS_CHUNK = 1000
CLAIM_PAGE_LIMIT = 1000  # claim_pending_datasets takes at most 1,000 a call


@dataclass
class EnqueueReport:
    enqueued: list[UUID] = field(default_factory=list)
    failed: dict[UUID, str] = field(default_factory=dict)


@dataclass
class DrainReport(EnqueueReport):
    pages: int = 0
    drained: bool = False  # False: time ran out with datasets still pending (continue later)
    stalled: bool = False  # the queue refused a whole page: continuing now would not help


def drain_backlog(
    catalog: Catalog,
    queue: Queue,
    *,
    claimer: str,
    claim_seconds: int,
    time_left: Callable[[], float],
    stop_with_seconds_left: float,
    page_size: int = CLAIM_PAGE_LIMIT,
    backoff: RetryBackoff | None = None,
    now: datetime | None = None,
) -> DrainReport:
    """Claim and enqueue every pending dataset, a page at a time, while more than
    ``stop_with_seconds_left`` seconds remain. The claim's order (fair retries) is kept page to
    page; a dataset still backing off is not pending yet. ``drained`` False: call again."""
    report = DrainReport()
    while time_left() > stop_with_seconds_left:
        page = claim_and_enqueue(
            catalog, queue, limit=page_size, claimer=claimer, claim_seconds=claim_seconds, backoff=backoff, now=now
        )
        report.pages += 1
        report.enqueued.extend(page.enqueued)
        report.failed.update(page.failed)
        if len(page.enqueued) + len(page.failed) < page_size:
            report.drained = True
            break
        if not page.enqueued:  # the queue refuses everything: stop, the claims were released
            report.stalled = True
            break
    return report


@dataclass
class HousekeepingReport:
    expired_leases: int = 0
    garbage_deleted: int = 0
    orphans_deleted: int = 0
    errors: list[str] = field(default_factory=list)


def claim_and_enqueue(
    catalog: Catalog,
    queue: Queue,
    *,
    limit: int,
    claimer: str,
    claim_seconds: int,
    backoff: RetryBackoff | None = None,
    priority: Priority = "scheduled",
    now: datetime | None = None,
) -> EnqueueReport:
    """Claim up to ``limit`` pending datasets and send one message each; unsent claims are released.

    Datasets whose last run failed wait out their ``backoff`` and come after those that did not fail.
    """
    now = now or datetime.now(UTC)
    claimed = catalog.claim_pending_datasets(limit=limit, claimer=claimer, claim_seconds=claim_seconds, backoff=backoff)
    if not claimed:
        return EnqueueReport()
    entries = [
        BatchEntry(
            id=str(d),
            body=CompactionMessage(dataset_id=d, triggered_at=now, priority=priority).model_dump_json(by_alias=True),
        )
        for d in claimed
    ]
    result = queue.send_batch(entries)
    failed = {UUID(i): reason for i, reason in result.failed.items()}
    if failed:
        catalog.release_claims(list(failed), claimer)
    return EnqueueReport(enqueued=[UUID(i) for i in result.sent], failed=failed)


def housekeeping(
    catalog: Catalog,
    store: ObjectStore,
    *,
    orphan_min_age: timedelta,
    now: datetime | None = None,
    max_keys_scanned: int = 100_000,
) -> HousekeepingReport:
    report = HousekeepingReport()
    now = now or datetime.now(UTC)
    report.expired_leases = len(catalog.sweep_expired_leases())

    # Replaced objects past their grace period.
    while True:
        garbage = catalog.list_garbage(limit=1000)
        if not garbage:
            break
        by_key = {g.object_key: g.id for g in garbage}
        failed = set(store.delete_many(list(by_key)))
        done = [fid for key, fid in by_key.items() if key not in failed]
        report.garbage_deleted += catalog.mark_objects_deleted(done)
        if failed:
            report.errors.append(f"could not delete {len(failed)} replaced objects")
            break

    # Orphans: objects no catalog row knows (a crash between the S3 write and the commit), old
    # enough that no upload or run in flight can still claim them.
    cutoff = now - orphan_min_age
    candidates = (
        o.key
        for o in itertools.islice(store.list_objects(keys.DATASETS_PREFIX), max_keys_scanned)
        if o.last_modified < cutoff
    )
    while chunk := list(itertools.islice(candidates, FIND_ORPHANS_CHUNK)):
        orphans = catalog.find_orphans(chunk)
        if orphans:
            failed_orphans = store.delete_many(orphans)
            report.orphans_deleted += len(orphans) - len(failed_orphans)
    return report


@dataclass
class ScheduledReport:
    drain: DrainReport
    hop: int
    house: HousekeepingReport | None = None
    stranded: StrandedReport | None = None
    continue_later: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        house = self.house or HousekeepingReport()
        return {
            "enqueued": [str(d) for d in self.drain.enqueued],
            "failed": {str(d): reason for d, reason in self.drain.failed.items()},
            "pages": self.drain.pages,
            "drained": self.drain.drained,
            "continuation": self.hop,
            "continued": self.continue_later,
            "expiredLeases": house.expired_leases,
            "garbageDeleted": house.garbage_deleted,
            "orphansDeleted": house.orphans_deleted,
            "strandedUploadsResent": len(self.stranded.resent) if self.stranded else 0,
            "errors": (self.stranded.errors if self.stranded else []) + house.errors,
        }


def continuation_of(detail: dict[str, Any] | None) -> int:
    n = (detail or {}).get(CONTINUATION_KEY, 0)
    return n if isinstance(n, int) and n >= 0 else 0


def continuation_event(event: dict[str, Any], hop: int) -> dict[str, Any]:
    """The EventBridge event again (same id: the same claimer), marked as its ``hop``-th sequel."""
    return {**event, "detail": {**(event.get("detail") or {}), CONTINUATION_KEY: hop}}


def scheduled_run(
    deps: Dependencies, *, claimer: str, hop: int, time_left: Callable[[], float], now: datetime | None = None
) -> ScheduledReport:
    """The daily run. The first invocation re-sends stranded uploads, drains the backlog into the
    low-priority queue and keeps time for housekeeping; a sequel only drains. ``continue_later``:
    datasets are still pending and the run may continue (at most ``scheduled_max_continuations``)."""
    from fusou_compaction.logic.presigned import resend_stranded_uploads

    s = deps.settings
    first = hop == 0
    stranded = resend_stranded_uploads(deps, min_age=timedelta(seconds=s.staging_min_age_seconds)) if first else None
    drain = drain_backlog(
        deps.catalog,
        deps.scheduled_queue or deps.queue,
        claimer=claimer,
        claim_seconds=s.claim_seconds,
        time_left=time_left,
        stop_with_seconds_left=s.scheduled_drain_reserve_seconds if first else 30,
        page_size=s.scheduled_page_size,
        backoff=s.retry_backoff,
        now=now,
    )
    house = None
    if first:
        house = housekeeping(deps.catalog, deps.store, orphan_min_age=timedelta(seconds=s.orphan_min_age_seconds))
    more = not drain.drained and not drain.stalled and hop < s.scheduled_max_continuations
    return ScheduledReport(drain=drain, hop=hop, house=house, stranded=stranded, continue_later=more)
