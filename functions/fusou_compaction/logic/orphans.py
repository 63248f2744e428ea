"""Orphans: objects under ``datasets/`` that no catalog row knows, deleted once old enough that no
upload or run in flight can still claim them. Two sweeps find them; neither lists the bucket.

- :func:`sweep_touched_datasets`, daily, scales with what changed: it lists only the prefixes of
  the datasets whose catalog rows changed since the last sweep (runs started, failed or finished,
  files registered or committed, uploads rejected; migration 0010 keeps the window). Every orphan
  the service makes lies under such a dataset's prefix, written about when such a row changed:
  the outputs of a run that crashed or failed, a fragment whose registration failed but was
  retried. A window looks back by the minimum age plus ``SLACK``, so what one sweep leaves for
  being too young, the next one sees again.
- :func:`reconcile_inventory`, every few days, is complete: the newest S3 Inventory report of the
  bucket, streamed, compared with the catalog. It finds what no catalog row points at, not even
  in time: a fragment written by an upload whose registration never happened (the catalog was
  down), possibly in a dataset the catalog never heard of; and any orphan the daily sweep missed.

Both keep their place in the catalog under a lease and stop when the invocation's time runs short,
so a later invocation resumes them; nothing is capped. Both delete only under ``datasets/`` (ours:
every key there is derived by the service, keys.py): ``staging/`` holds presigned uploads, which
the register function registers or rejects, the scheduled run re-sends, and a lifecycle rule
expires after 2 days; ``plans/`` expires after 7 days by lifecycle; any other key is not ours to
judge: it is counted and named in the report (``unknown``), never deleted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogError
from fusou_compaction.catalog.models import InventorySweep, OrphanSweepDataset
from fusou_compaction.ports.inventory import InventoryReport, InventoryReports
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound, ObjectStore

# A window looks back by the minimum age plus this: a change committed a little after the previous
# window was cut (its timestamp is its transaction's start) is still in the next one. With the
# deployed minimum age (6 h) the look-back already covers far more: also the writes of a failed
# run's Compact invocations still running (up to 15 min after its row last changed), but for those
# of runs that failed just over 6 h before a sweep, which the inventory sweep finds. Kept short:
# with a minimum age of 0 (tests) every sweep lists again what changed within it.
SLACK = timedelta(seconds=5)
FIND_ORPHANS_CHUNK = 1000  # keys per find_orphans call
DATASETS_PER_ROUND = 100  # touched datasets listed between two records of progress
KEYS_PER_ROUND = 2000  # keys of one dataset per round (two List pages): bounds a round's time and memory
LISTERS = 16  # List calls in flight
CHECK_TIME_EVERY = 1000  # inventory rows between looks at the clock
UNKNOWN_SAMPLE = 20
# Prefixes whose objects have a life of their own (see the module's docstring).
NOT_SWEPT_PREFIXES = (keys.STAGING_PREFIX, keys.PLANS_PREFIX)

TimeLeft = Callable[[], float]


@dataclass
class OrphanReport:
    swept_datasets: int = 0  # touched sweep: dataset prefixes listed to their end
    examined: int = 0  # keys listed (touched) or read from the report (inventory)
    deleted: int = 0
    finished: bool = False  # nothing left: the window is done, the report is done, or none is due
    busy: bool = False  # another invocation holds the sweep's lease
    report: str | None = None  # inventory: the report read
    not_swept: int = 0  # inventory: keys under staging/ and plans/
    unknown: int = 0  # inventory: keys under no prefix of ours
    unknown_sample: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, object]:
        return {
            "sweptDatasets": self.swept_datasets,
            "examined": self.examined,
            "deleted": self.deleted,
            "finished": self.finished,
            "busy": self.busy,
            "report": self.report,
            "notSwept": self.not_swept,
            "unknown": self.unknown,
            "unknownSample": self.unknown_sample,
            "errors": self.errors,
        }


@contextmanager
def _released(catalog: Catalog, sweep: Literal["touched", "inventory"], owner: str) -> Iterator[None]:
    """The sweep's lease is given back when the invocation stops sweeping, so the next one need not
    wait for it to run out (it still does after a crash, or with the catalog unreachable)."""
    try:
        yield
    finally:
        with suppress(CatalogError):
            catalog.release_orphan_sweep(sweep=sweep, owner=owner)


def lease_seconds(time_left: TimeLeft) -> int:
    """The sweep's lease lasts as long as the invocation may (a crashed one frees it then)."""
    left = time_left()
    return 900 if math.isinf(left) else max(60, int(left) + 60)


class _Orphans:
    """Keys old enough to be orphans, asked of the catalog a thousand at a time; the orphans among
    them are deleted. ``recheck``: the keys come from a report up to a day old, so each orphan is
    looked at again (HEAD) and deleted only if it is still the object the report saw, old enough
    (AWS's advice before acting on an inventory)."""

    def __init__(
        self, catalog: Catalog, store: ObjectStore, cutoff: datetime, report: OrphanReport, *, recheck: bool
    ) -> None:
        self.catalog, self.store, self.cutoff, self.report, self.recheck = catalog, store, cutoff, report, recheck
        self.pending: list[str] = []

    def offer(self, info: ObjectInfo) -> None:
        if info.last_modified < self.cutoff:
            self.pending.append(info.key)
            if len(self.pending) >= FIND_ORPHANS_CHUNK:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        orphans = self.catalog.find_orphans(self.pending)
        self.pending = []
        if self.recheck:
            orphans = [
                k for k in orphans if (again := self.store.head(k)) is not None and again.last_modified < self.cutoff
            ]
        if not orphans:
            return
        failed = self.store.delete_many(orphans)
        self.report.deleted += len(orphans) - len(failed)
        if failed:
            self.report.errors.append(f"could not delete {len(failed)} orphans, e.g. {failed[0]}")


@dataclass
class _Listed:
    dataset_id: UUID
    examined: int = 0
    candidates: list[ObjectInfo] = field(default_factory=list)
    stopped_after: str | None = None


def _list_some(store: ObjectStore, item: OrphanSweepDataset, cutoff: datetime) -> _Listed:
    """Up to KEYS_PER_ROUND keys of the dataset's prefix after its ``start_after``."""
    listed = _Listed(item.dataset_id)
    for info in store.list_objects(keys.dataset_prefix(item.dataset_id), start_after=item.start_after):
        listed.examined += 1
        if info.last_modified < cutoff:
            listed.candidates.append(info)
        if listed.examined >= KEYS_PER_ROUND:
            listed.stopped_after = info.key  # a large prefix yields to the others; the next round resumes it
            break
    return listed


def sweep_touched_datasets(
    catalog: Catalog,
    store: ObjectStore,
    *,
    owner: str,
    orphan_min_age: timedelta,
    time_left: TimeLeft,
    stop_with_seconds_left: float,
    now: datetime | None = None,
    listers: int = LISTERS,
    round_size: int = DATASETS_PER_ROUND,
) -> OrphanReport:
    """List the prefix of every dataset touched in the catalog's window and delete its orphans.

    Rounds of ``round_size`` datasets, listed ``listers`` at a time (each List call waits on
    S3, so a few in flight keep the invocation busy), then one catalog call per thousand old-enough
    keys and one to record the round. Stops between rounds once ``stop_with_seconds_left`` seconds
    are left, its place kept in the catalog (``finished`` False)."""
    report = OrphanReport()
    now = now or datetime.now(UTC)
    cutoff = now - orphan_min_age
    window = catalog.begin_orphan_sweep(
        owner=owner,
        lease_seconds=lease_seconds(time_left),
        lookback_seconds=int((orphan_min_age + SLACK).total_seconds()),
    )
    if not window.acquired:
        report.busy = True
        return report
    orphans = _Orphans(catalog, store, cutoff, report, recheck=False)
    with (
        _released(catalog, "touched", owner),
        ThreadPoolExecutor(max_workers=listers, thread_name_prefix="orphan-sweep") as pool,
    ):
        while time_left() > stop_with_seconds_left:
            page = catalog.next_orphan_sweep_datasets(owner=owner, limit=round_size)
            rounds = list(pool.map(lambda item: _list_some(store, item, cutoff), page))
            for listed in rounds:
                report.examined += listed.examined
                for info in listed.candidates:
                    orphans.offer(info)
            orphans.flush()  # every listed key is settled before the round is recorded
            done = [r.dataset_id for r in rounds if r.stopped_after is None]
            partial = [OrphanSweepDataset(dataset_id=r.dataset_id, start_after=r.stopped_after) for r in rounds]
            report.swept_datasets += len(done)
            progress = catalog.record_orphan_sweep_progress(
                owner=owner, done=done, partial=[p for p in partial if p.start_after is not None]
            )
            if progress.finished:
                report.finished = True
                break
    return report


def _classify(key: str) -> str:
    if key.startswith(keys.DATASETS_PREFIX):
        return "dataset"
    if key.startswith(NOT_SWEPT_PREFIXES):
        return "not swept"
    return "unknown"


def reconcile_inventory(
    catalog: Catalog,
    store: ObjectStore,
    reports: InventoryReports,
    *,
    owner: str,
    orphan_min_age: timedelta,
    every: timedelta,
    time_left: TimeLeft,
    stop_with_seconds_left: float,
    now: datetime | None = None,
    check_time_every: int = CHECK_TIME_EVERY,
) -> OrphanReport:
    """Compare the bucket's newest inventory report (at most one per ``every``) with the catalog,
    row by row, and delete the orphans; stops with ``stop_with_seconds_left`` seconds left, keeping
    its place in the report (``finished`` False)."""
    report = OrphanReport()
    now = now or datetime.now(UTC)
    newest = reports.newest()
    sweep = catalog.begin_inventory_sweep(
        owner=owner,
        lease_seconds=lease_seconds(time_left),
        every_seconds=int(every.total_seconds()),
        report=newest.key if newest else None,
        report_created_at=newest.created_at if newest else None,
    )
    if not sweep.acquired:
        report.busy = True
        return report
    with _released(catalog, "inventory", owner):
        if sweep.report is None:  # no report yet, or none due
            report.finished = True
        else:
            _sweep_report(
                catalog,
                reports,
                sweep,
                newest,
                _Orphans(catalog, store, now - orphan_min_age, report, recheck=True),
                owner=owner,
                out_of_time=lambda: time_left() <= stop_with_seconds_left,
                check_time_every=check_time_every,
            )
    return report


def _sweep_report(
    catalog: Catalog,
    reports: InventoryReports,
    sweep: InventorySweep,
    newest: InventoryReport | None,
    orphans: _Orphans,
    *,
    owner: str,
    out_of_time: Callable[[], bool],
    check_time_every: int,
) -> None:
    report, key = orphans.report, sweep.report
    assert key is not None
    report.report = key
    try:
        inventory = newest if newest and newest.key == key else reports.report(key)
        for file in range(sweep.file, len(inventory.files)):
            skip = sweep.rows if file == sweep.file else 0
            for n, info in enumerate(reports.rows(inventory, file), 1):
                if n <= skip:
                    continue
                report.examined += 1
                kind = _classify(info.key)
                if kind == "dataset":
                    orphans.offer(info)
                elif kind == "not swept":
                    report.not_swept += 1
                else:
                    report.unknown += 1
                    if len(report.unknown_sample) < UNKNOWN_SAMPLE:
                        report.unknown_sample.append(info.key)
                if n % check_time_every == 0 and out_of_time():
                    orphans.flush()
                    catalog.record_inventory_progress(owner=owner, report=key, file=file, rows=n)
                    return
            orphans.flush()
            catalog.record_inventory_progress(owner=owner, report=key, file=file + 1, rows=0)
    except ObjectNotFound as exc:
        # The report expired under us (a sweep spread over more days than reports are kept): drop
        # it; the next sweep takes the newest.
        orphans.flush()
        catalog.finish_inventory_sweep(owner=owner, report=key, completed=False)
        report.errors.append(f"inventory report {key} abandoned: {exc}")
        return
    catalog.finish_inventory_sweep(owner=owner, report=key, completed=True)
    report.finished = True
