"""The two status bodies shared by the API and the CLI (DESIGN: `status --json`, `dlq-status --json`).

One builder each, so `GET /api/compaction/datasets/{id}` and `fusou-compaction status --json`
(and likewise the DLQ pair) can never drift apart.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import CatalogFile, Failure, QuarantineCount, QuarantinedFile, Run
from fusou_compaction.ports.messaging import Queue, QueueDepth

RECENT_FAILURES = 20
RECENT_RUNS = 10


def _table_entry(files: list[CatalogFile]) -> dict[str, Any]:
    return {
        "fragments": sum(f.kind == "fragment" for f in files),
        "compacted": sum(f.kind == "compacted" for f in files),
        "rows": sum(f.row_count for f in files),
        "bytes": sum(f.size_bytes for f in files),
        "files": [{"key": f.object_key, "kind": f.kind, "rows": f.row_count, "bytes": f.size_bytes} for f in files],
    }


def _run_entry(run: Run) -> dict[str, Any]:
    return {
        "runId": str(run.id),
        "status": run.status,
        "trigger": run.trigger,
        "errorStep": run.error_step,
        "error": run.error,
    }


def _quarantined_entry(f: QuarantinedFile) -> dict[str, Any]:
    return {
        "fragmentId": str(f.id),
        "table": f.table_name,
        "key": f.object_key,
        "reason": f.quarantine_reason,
        "step": f.quarantine_step,
        "at": f.quarantined_at.isoformat() if f.quarantined_at else None,
        "runId": str(f.quarantined_by_run) if f.quarantined_by_run else None,
        "rows": f.row_count,
    }


def dataset_status_body(catalog: Catalog, dataset_id: UUID, runs: int = RECENT_RUNS) -> dict[str, Any]:
    """Live files per table, pending fragments, last runs (newest first). Raises CatalogNotFound."""
    status = catalog.dataset_status(dataset_id, runs=runs)
    by_table: dict[str, list[CatalogFile]] = {}
    for f in sorted(status.files, key=lambda f: (f.table_name, f.seq)):
        by_table.setdefault(f.table_name, []).append(f)
    return {
        "datasetId": str(status.dataset.id),
        "compactionNeeded": status.dataset.compaction_needed,
        "tables": {name: _table_entry(files) for name, files in by_table.items()},
        "runs": [_run_entry(r) for r in status.runs],  # the catalog returns them newest first
        # Files set aside because they cannot be compacted (migration 0008), oldest first: their
        # rows are in no table above until an operator re-admits them.
        "quarantined": [_quarantined_entry(f) for f in status.quarantined],
    }


def _depth_entry(depth: QueueDepth) -> dict[str, Any]:
    return {"visible": depth.visible, "inFlight": depth.in_flight, "oldestAgeSeconds": depth.oldest_age_seconds}


def _failure_entry(f: Failure) -> dict[str, Any]:
    return {
        "datasetId": str(f.dataset_id) if f.dataset_id else None,
        "runId": str(f.run_id) if f.run_id else None,
        "errorStep": f.error_step,
        "error": f.error,
        "message": f.body,  # the original message body, verbatim (it may not even be JSON)
        "at": f.at.isoformat(),
    }


def _quarantine_count(c: QuarantineCount) -> dict[str, Any]:
    return {
        "fragments": c.files,
        "datasets": c.datasets,
        "rows": c.rows,
        "oldestAt": c.oldest_at.isoformat() if c.oldest_at else None,
    }


def dlq_status_body(catalog: Catalog, queue: Queue, dlq: Queue, limit: int = RECENT_FAILURES) -> dict[str, Any]:
    return {
        "queue": _depth_entry(queue.depth()),
        "dlq": _depth_entry(dlq.depth()),
        "recentFailures": [_failure_entry(f) for f in catalog.list_recent_failures(limit)],
        # Files that no run will compact until an operator re-admits or deletes them.
        "quarantined": _quarantine_count(catalog.count_quarantined()),
    }
