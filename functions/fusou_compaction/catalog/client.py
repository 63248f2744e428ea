"""The catalog port: typed calls of the SQL functions over any transport."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import TypeAdapter

from fusou_compaction.catalog.models import (
    Admission,
    AdmissionPolicy,
    CatalogFile,
    CommitResult,
    CompactedOutput,
    Dataset,
    DatasetStatus,
    DeleteQuarantinedResult,
    ExpiredLease,
    Failure,
    FailureRecorded,
    GarbageObject,
    InventorySweep,
    LeaseResult,
    OrphanSweepDataset,
    OrphanSweepProgress,
    OrphanSweepWindow,
    QuarantineCount,
    QuarantinedFile,
    QuarantineResult,
    ReadmitResult,
    RedrivableFailure,
    RegisteredFragment,
    RetryBackoff,
    Run,
    RunStatus,
    RunTransition,
    Trigger,
)
from fusou_compaction.catalog.transport import RpcTransport

_files = TypeAdapter(list[CatalogFile])
_failures = TypeAdapter(list[Failure])
_expired = TypeAdapter(list[ExpiredLease])
_garbage = TypeAdapter(list[GarbageObject])
_uuids = TypeAdapter(list[UUID])
_strs = TypeAdapter(list[str])
_redrivable = TypeAdapter(list[RedrivableFailure])
_schemas = TypeAdapter(dict[str, str])
_quarantined = TypeAdapter(list[QuarantinedFile])
_sweep_datasets = TypeAdapter(list[OrphanSweepDataset])


class Catalog:
    def __init__(self, transport: RpcTransport) -> None:
        self.transport = transport
        # Fingerprints this client has recorded: a warm upload Lambda sees the same few schemas
        # (one per client version and table) over and over, and skips the call for them.
        self._recorded_schemas: set[str] = set()

    def _call(self, function: str, **params: Any) -> Any:
        return self.transport.call(function, {k: v for k, v in params.items() if v is not None})

    def close(self) -> None:
        self.transport.close()

    # Fragments and datasets.
    def register_fragment(
        self,
        *,
        dataset_id: UUID,
        owner_id: UUID,
        table: str,
        object_key: str,
        size_bytes: int,
        row_count: int,
        sha256: str,
        schema_fingerprint: str,
        dataset_name: str | None = None,
    ) -> RegisteredFragment:
        return RegisteredFragment.model_validate(
            self._call(
                "register_fragment",
                p_dataset_id=dataset_id,
                p_owner_id=owner_id,
                p_table=table,
                p_object_key=object_key,
                p_size_bytes=size_bytes,
                p_row_count=row_count,
                p_sha256=sha256,
                p_schema_fingerprint=schema_fingerprint,
                p_dataset_name=dataset_name,
            )
        )

    def find_fragment(self, dataset_id: UUID, table: str, sha256: str) -> CatalogFile | None:
        """The fragment of (dataset, table) with these bytes, live or compacted, if any (0006)."""
        found = self._call("find_fragment", p_dataset_id=dataset_id, p_table=table, p_sha256=sha256)
        return None if found is None else CatalogFile.model_validate(found)

    # Arrow schemas by fingerprint (migration 0004): a cache that lets the Compact step unify a
    # bin's schemas without reading every footer first.
    def register_schemas(self, schemas: Mapping[str, str]) -> int:
        """Record ``{fingerprint: base64 Arrow IPC schema}``; returns how many were new to the
        catalog. Fingerprints this client already recorded are not sent again."""
        todo = {fp: b64 for fp, b64 in schemas.items() if fp not in self._recorded_schemas}
        if not todo:
            return 0
        added = int(self._call("register_schemas", p_schemas=todo))
        if len(self._recorded_schemas) > 4096:  # bounded: a long-lived process sees many versions
            self._recorded_schemas.clear()
        self._recorded_schemas.update(todo)
        return added

    def get_schemas(self, fingerprints: Sequence[str]) -> dict[str, str]:
        """The recorded schemas among ``fingerprints`` (unknown ones are absent)."""
        if not fingerprints:
            return {}
        return _schemas.validate_python(self._call("get_schemas", p_fingerprints=sorted(set(fingerprints))))

    def get_dataset(self, dataset_id: UUID) -> Dataset:
        return Dataset.model_validate(self._call("get_dataset", p_dataset_id=dataset_id))

    def list_live_files(self, dataset_id: UUID, table: str | None = None) -> list[CatalogFile]:
        return _files.validate_python(self._call("list_live_files", p_dataset_id=dataset_id, p_table=table))

    def dataset_status(self, dataset_id: UUID, runs: int = 10) -> DatasetStatus:
        return DatasetStatus.model_validate(self._call("dataset_status", p_dataset_id=dataset_id, p_runs=runs))

    # Scheduling.
    def claim_pending_datasets(
        self,
        *,
        limit: int,
        claimer: str,
        claim_seconds: int = 3600,
        backoff: RetryBackoff | None = None,
    ) -> list[UUID]:
        """Pending datasets in claim order: those whose last run did not fail, oldest first, then
        those whose backoff is over (migration 0007). ``None``: the catalog's default backoff."""
        return _uuids.validate_python(
            self._call(
                "claim_pending_datasets",
                p_limit=limit,
                p_claimer=claimer,
                p_claim_seconds=claim_seconds,
                p_backoff_base_seconds=backoff.base_seconds if backoff else None,
                p_backoff_max_seconds=backoff.max_seconds if backoff else None,
            )
        )

    def release_claims(self, dataset_ids: Sequence[UUID], claimer: str) -> int:
        return int(self._call("release_claims", p_dataset_ids=list(dataset_ids), p_claimer=claimer))

    # Runs and leases.
    def admit_run(self, *, run_id: UUID, dataset_id: UUID, priority: str, policy: AdmissionPolicy) -> Admission:
        """Take the run's weight of the global budget, or refuse (migration 0009); idempotent."""
        return Admission.model_validate(
            self._call(
                "admit_run",
                p_run_id=run_id,
                p_dataset_id=dataset_id,
                p_priority=priority,
                p_budget=policy.budget,
                p_reserve=policy.reserve,
                p_max_weight=policy.max_weight,
                p_target_bytes=policy.target_bytes,
                p_stale_seconds=policy.stale_seconds,
            )
        )

    def release_admission(self, run_id: UUID) -> bool:
        return bool(self._call("release_admission", p_run_id=run_id))

    def admission_status(self, stale_seconds: int = 900) -> dict[str, int]:
        return {k: int(v) for k, v in self._call("admission_status", p_stale_seconds=stale_seconds).items()}

    def begin_run(
        self,
        *,
        run_id: UUID,
        dataset_id: UUID,
        trigger: Trigger,
        execution_id: str | None = None,
        message: dict[str, Any] | None = None,
    ) -> Run:
        return Run.model_validate(
            self._call(
                "begin_run",
                p_run_id=run_id,
                p_dataset_id=dataset_id,
                p_trigger=trigger,
                p_execution_id=execution_id,
                p_message=message,
            )
        )

    def acquire_lease(self, *, dataset_id: UUID, run_id: UUID, lease_seconds: int) -> LeaseResult:
        return LeaseResult.model_validate(
            self._call(
                "acquire_lease",
                p_dataset_id=dataset_id,
                p_run_id=run_id,
                p_lease_seconds=lease_seconds,
            )
        )

    def release_lease(self, *, dataset_id: UUID, run_id: UUID) -> bool:
        return bool(self._call("release_lease", p_dataset_id=dataset_id, p_run_id=run_id))

    def record_run_status(
        self, run_id: UUID, status: RunStatus, details: dict[str, Any] | None = None
    ) -> RunTransition:
        return RunTransition.model_validate(
            self._call(
                "record_run_status",
                p_run_id=run_id,
                p_status=status,
                p_details=details or {},
            )
        )

    def commit_compaction(
        self,
        *,
        run_id: UUID,
        dataset_id: UUID,
        removed: Sequence[UUID],
        outputs: Sequence[CompactedOutput],
        metrics: dict[str, Any] | None = None,
        grace_seconds: int = 86_400,
    ) -> CommitResult:
        return CommitResult.model_validate(
            self._call(
                "commit_compaction",
                p_run_id=run_id,
                p_dataset_id=dataset_id,
                p_removed=list(removed),
                p_outputs=[o.model_dump(mode="json") for o in outputs],
                p_metrics=metrics or {},
                p_grace_seconds=grace_seconds,
            )
        )

    # Quarantine (migration 0008): files that cannot be compacted for a reason of their own.
    def quarantine_file(
        self, *, run_id: UUID, dataset_id: UUID, file_id: UUID, step: str, reason: str
    ) -> QuarantineResult:
        """Set one file of the dataset aside, for the run holding its lease (LeaseNotHeld if not).
        Idempotent: an already quarantined file keeps its first reason (``quarantined`` False)."""
        return QuarantineResult.model_validate(
            self._call(
                "quarantine_file",
                p_run_id=run_id,
                p_dataset_id=dataset_id,
                p_file_id=file_id,
                p_step=step,
                p_reason=reason,
            )
        )

    def list_quarantined(self, dataset_id: UUID) -> list[QuarantinedFile]:
        return _quarantined.validate_python(self._call("list_quarantined", p_dataset_id=dataset_id))

    def count_quarantined(self) -> QuarantineCount:
        return QuarantineCount.model_validate(self._call("count_quarantined"))

    def readmit_quarantined(self, file_id: UUID) -> ReadmitResult:
        return ReadmitResult.model_validate(self._call("readmit_quarantined", p_file_id=file_id))

    def delete_quarantined(self, file_id: UUID, grace_seconds: int = 0) -> DeleteQuarantinedResult:
        return DeleteQuarantinedResult.model_validate(
            self._call("delete_quarantined", p_file_id=file_id, p_grace_seconds=grace_seconds)
        )

    # Failures.
    def record_failure(
        self,
        *,
        source: str,
        error: str,
        message_id: str | None = None,
        dataset_id: UUID | None = None,
        run_id: UUID | None = None,
        error_step: str | None = None,
        body: str | None = None,
    ) -> FailureRecorded:
        return FailureRecorded.model_validate(
            self._call(
                "record_failure",
                p_source=source,
                p_error=error,
                p_message_id=message_id,
                p_dataset_id=dataset_id,
                p_run_id=run_id,
                p_error_step=error_step,
                p_body=body,
            )
        )

    def list_recent_failures(self, limit: int = 20) -> list[Failure]:
        return _failures.validate_python(self._call("list_recent_failures", p_limit=limit))

    def list_redrivable_failures(self, limit: int = 10) -> list[RedrivableFailure]:
        return _redrivable.validate_python(self._call("list_redrivable_failures", p_limit=limit))

    def mark_failures_redriven(self, failure_ids: Sequence[int]) -> int:
        return int(self._call("mark_failures_redriven", p_ids=list(failure_ids)))

    # Housekeeping.
    def sweep_expired_leases(self) -> list[ExpiredLease]:
        return _expired.validate_python(self._call("sweep_expired_leases"))

    def list_garbage(self, limit: int = 1000) -> list[GarbageObject]:
        return _garbage.validate_python(self._call("list_garbage", p_limit=limit))

    def mark_objects_deleted(self, file_ids: Sequence[UUID]) -> int:
        return int(self._call("mark_objects_deleted", p_file_ids=list(file_ids)))

    def find_orphans(self, keys: Sequence[str]) -> list[str]:
        return _strs.validate_python(self._call("find_orphans", p_keys=list(keys)))

    # The orphan sweeps (migration 0010): each keeps its place in the catalog under a lease.
    def begin_orphan_sweep(self, *, owner: str, lease_seconds: int, lookback_seconds: int) -> OrphanSweepWindow:
        """Take the touched sweep: its unfinished window, or a new one from the watermark less
        ``lookback_seconds`` to now, whose touched datasets the catalog lists at once."""
        return OrphanSweepWindow.model_validate(
            self._call(
                "begin_orphan_sweep",
                p_owner=owner,
                p_lease_seconds=lease_seconds,
                p_lookback_seconds=lookback_seconds,
            )
        )

    def next_orphan_sweep_datasets(self, *, owner: str, limit: int = 100) -> list[OrphanSweepDataset]:
        return _sweep_datasets.validate_python(self._call("next_orphan_sweep_datasets", p_owner=owner, p_limit=limit))

    def record_orphan_sweep_progress(
        self, *, owner: str, done: Sequence[UUID], partial: Sequence[OrphanSweepDataset] = ()
    ) -> OrphanSweepProgress:
        """``done``: swept to the end of their prefix; ``partial``: swept up to ``start_after``."""
        return OrphanSweepProgress.model_validate(
            self._call(
                "record_orphan_sweep_progress",
                p_owner=owner,
                p_done=list(done),
                p_partial=[p.model_dump(mode="json") for p in partial],
            )
        )

    def begin_inventory_sweep(
        self,
        *,
        owner: str,
        lease_seconds: int,
        report: str | None,
        report_created_at: datetime | None,
        every_seconds: int,
    ) -> InventorySweep:
        return InventorySweep.model_validate(
            self._call(
                "begin_inventory_sweep",
                p_owner=owner,
                p_lease_seconds=lease_seconds,
                p_report=report,
                p_report_created_at=report_created_at,
                p_every_seconds=every_seconds,
            )
        )

    def record_inventory_progress(self, *, owner: str, report: str, file: int, rows: int) -> None:
        self._call("record_inventory_progress", p_owner=owner, p_report=report, p_file=file, p_rows=rows)

    def finish_inventory_sweep(self, *, owner: str, report: str, completed: bool) -> bool:
        return bool(self._call("finish_inventory_sweep", p_owner=owner, p_report=report, p_completed=completed))

    def release_orphan_sweep(self, *, sweep: Literal["touched", "inventory"], owner: str) -> bool:
        return bool(self._call("release_orphan_sweep", p_sweep=sweep, p_owner=owner))

    def orphan_sweep_status(self) -> dict[str, Any]:
        return dict(self._call("orphan_sweep_status"))
