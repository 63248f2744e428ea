"""The scheduled run: claim pending datasets and enqueue them; sweep leases and garbage."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import RetryBackoff
from fusou_compaction.pipeline.models import CompactionMessage, Priority
from fusou_compaction.ports.messaging import BatchEntry, Queue
from fusou_compaction.ports.object_store import ObjectStore

FIND_ORPHANS_CHUNK = 1000


@dataclass
class EnqueueReport:
    enqueued: list[UUID] = field(default_factory=list)
    failed: dict[UUID, str] = field(default_factory=dict)


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
