"""The scheduled run: claim pending datasets and enqueue them; sweep leases and garbage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import LeaseNotHeld
from fusou_compaction.catalog.models import RetryBackoff
from fusou_compaction.logic.orphans import OrphanReport, reconcile_inventory, sweep_touched_datasets
from fusou_compaction.pipeline.models import CompactionMessage, Priority
from fusou_compaction.ports.inventory import InventoryReports
from fusou_compaction.ports.messaging import BatchEntry, Queue
from fusou_compaction.ports.object_store import ObjectStore

if TYPE_CHECKING:
    from fusou_compaction.handlers.deps import Dependencies
    from fusou_compaction.logic.presigned import StrandedReport

CONTINUATION_KEY = "continuation"  # in the EventBridge event's detail: how many invocations came before
HOUSEKEEPING_KEY = "housekeeping"  # in a sequel's detail: true while housekeeping has work left
HOUSEKEEPING_STOP_SECONDS = 30  # housekeeping stops with this much of the invocation left
RECONCILE_EVERY = timedelta(days=7)

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
    garbage_finished: bool = True
    touched: OrphanReport | None = None
    inventory: OrphanReport | None = None
    errors: list[str] = field(default_factory=list)

    # Nothing left to do (or left to another invocation that holds a sweep); False: out of time,
    # continue in a later invocation, which resumes where this one stopped.
    finished: bool = False

    @property
    def orphans_deleted(self) -> int:
        return sum(r.deleted for r in (self.touched, self.inventory) if r is not None)


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
    inventory: InventoryReports | None = None,
    reconcile_every: timedelta = RECONCILE_EVERY,
    owner: str = "housekeeping",
    time_left: Callable[[], float] = lambda: math.inf,
    stop_with_seconds_left: float = HOUSEKEEPING_STOP_SECONDS,
) -> HousekeepingReport:
    """Expired leases, replaced objects past their grace period, then orphans (logic/orphans.py):
    the datasets touched since the last sweep, then the inventory report when one is due. Stops
    with ``stop_with_seconds_left`` seconds left; ``finished`` False: call again (it resumes)."""
    report = HousekeepingReport()
    now = now or datetime.now(UTC)
    report.expired_leases = len(catalog.sweep_expired_leases())

    def out_of_time() -> bool:
        return time_left() <= stop_with_seconds_left

    # Replaced objects past their grace period.
    while True:
        if out_of_time():
            report.garbage_finished = False
            return report
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
    # enough that no upload or run in flight can still claim them. First the datasets that changed
    # since the last sweep, then, when a report is due, the whole bucket from its inventory.
    def run(sweep: Callable[[], OrphanReport]) -> OrphanReport:
        try:
            result = sweep()
        except LeaseNotHeld as exc:  # this invocation outlived its lease: whoever holds it now goes on
            result = OrphanReport(busy=True, errors=[str(exc)])
        report.errors.extend(result.errors)
        return result

    report.touched = run(
        lambda: sweep_touched_datasets(
            catalog,
            store,
            owner=owner,
            orphan_min_age=orphan_min_age,
            time_left=time_left,
            stop_with_seconds_left=stop_with_seconds_left,
            now=now,
        )
    )
    if not (report.touched.finished or report.touched.busy):
        return report  # out of time
    if inventory is not None:
        if out_of_time():
            return report
        report.inventory = run(
            lambda: reconcile_inventory(
                catalog,
                store,
                inventory,
                owner=owner,
                orphan_min_age=orphan_min_age,
                every=reconcile_every,
                time_left=time_left,
                stop_with_seconds_left=stop_with_seconds_left,
                now=now,
            )
        )
        if not (report.inventory.finished or report.inventory.busy):
            return report
    report.finished = True
    return report


@dataclass
class ScheduledReport:
    drain: DrainReport
    hop: int
    house: HousekeepingReport | None = None
    stranded: StrandedReport | None = None
    continue_later: bool = False

    @property
    def housekeeping_left(self) -> bool:
        return self.house is not None and not self.house.finished

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
            "housekeepingFinished": self.house.finished if self.house else None,
            "orphanSweep": {
                "touched": house.touched.to_json_dict() if house.touched else None,
                "inventory": house.inventory.to_json_dict() if house.inventory else None,
            },
            "strandedUploadsResent": len(self.stranded.resent) if self.stranded else 0,
            "errors": (self.stranded.errors if self.stranded else []) + house.errors,
        }


def continuation_of(detail: dict[str, Any] | None) -> int:
    n = (detail or {}).get(CONTINUATION_KEY, 0)
    return n if isinstance(n, int) and n >= 0 else 0


def housekeeping_pending(detail: dict[str, Any] | None) -> bool:
    """Whether this invocation does housekeeping: the first always, a sequel if it was left unfinished."""
    return continuation_of(detail) == 0 or (detail or {}).get(HOUSEKEEPING_KEY) is True


def continuation_event(event: dict[str, Any], hop: int, *, housekeeping: bool = False) -> dict[str, Any]:
    """The EventBridge event again (same id: the same claimer), marked as its ``hop``-th sequel,
    and whether housekeeping has work left."""
    return {**event, "detail": {**(event.get("detail") or {}), CONTINUATION_KEY: hop, HOUSEKEEPING_KEY: housekeeping}}


def scheduled_run(
    deps: Dependencies,
    *,
    claimer: str,
    hop: int,
    time_left: Callable[[], float],
    now: datetime | None = None,
    with_housekeeping: bool | None = None,
) -> ScheduledReport:
    """The daily run. The first invocation re-sends stranded uploads, drains the backlog into the
    low-priority queue and keeps time for housekeeping; a sequel drains, and does housekeeping too
    if the one before left some (``with_housekeeping``; default: only the first).
    ``continue_later``: datasets are still pending or housekeeping is unfinished, and the run may
    continue (at most ``scheduled_max_continuations`` times)."""
    from fusou_compaction.logic.presigned import resend_stranded_uploads

    s = deps.settings
    first = hop == 0
    with_housekeeping = first if with_housekeeping is None else with_housekeeping
    stranded = resend_stranded_uploads(deps, min_age=timedelta(seconds=s.staging_min_age_seconds)) if first else None
    drain = drain_backlog(
        deps.catalog,
        deps.scheduled_queue or deps.queue,
        claimer=claimer,
        claim_seconds=s.claim_seconds,
        time_left=time_left,
        stop_with_seconds_left=s.scheduled_drain_reserve_seconds if with_housekeeping else 30,
        page_size=s.scheduled_page_size,
        backoff=s.retry_backoff,
        now=now,
    )
    house = None
    if with_housekeeping:
        house = housekeeping(
            deps.catalog,
            deps.store,
            orphan_min_age=timedelta(seconds=s.orphan_min_age_seconds),
            inventory=deps.inventory,
            reconcile_every=timedelta(days=s.orphan_reconcile_every_days),
            owner=claimer,
            time_left=time_left,
        )
    more = (not drain.drained and not drain.stalled) or (house is not None and not house.finished)
    return ScheduledReport(
        drain=drain,
        hop=hop,
        house=house,
        stranded=stranded,
        continue_later=more and hop < s.scheduled_max_continuations,
    )
