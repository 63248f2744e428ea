"""Pydantic models of what the catalog's SQL functions take and return (snake_case JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "succeeded", "skipped", "failed"]
Trigger = Literal["manual", "scheduled", "realtime"]
FileKind = Literal["fragment", "compacted"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Dataset(_Model):
    id: UUID
    owner_id: UUID
    name: str | None = None
    compaction_needed: bool
    lease_owner: UUID | None = None
    lease_expires_at: datetime | None = None
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None
    last_compacted_at: datetime | None = None
    live_fragments: int
    live_compacted: int
    live_bytes: int
    live_rows: int
    compactions: int
    # Runs failed in a row (reset by a commit) and when the last failed: the scheduler's backoff.
    consecutive_failures: int = 0
    last_failed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class RetryBackoff(_Model):
    """A dataset whose runs failed n times in a row is claimed again min(base * 2^(n-1), max)
    seconds after its last failure (claim_pending_datasets, migration 0007)."""

    base_seconds: int = Field(ge=0)
    max_seconds: int = Field(ge=0)

    def delay_seconds(self, failures: int) -> float:
        return 0.0 if failures < 1 else float(min(self.base_seconds * 2 ** min(failures - 1, 40), self.max_seconds))


class AdmissionPolicy(_Model):
    """The global compaction budget (admit_run, migration 0009): at most ``budget`` Compact
    invocations at once; ``scheduled`` runs may take all but ``reserve`` of it."""

    budget: int = Field(ge=1)
    reserve: int = Field(ge=0)
    max_weight: int = Field(ge=1)  # the Map's concurrency: the most one run holds at once
    target_bytes: int = Field(ge=1)
    stale_seconds: int = Field(900, ge=1)


class Admission(_Model):
    admitted: bool
    weight: int
    in_flight: int | None = None  # weight held by other runs when this one was decided
    budget: int


class CatalogFile(_Model):
    id: UUID
    dataset_id: UUID
    table_name: str
    kind: FileKind
    object_key: str
    size_bytes: int
    row_count: int
    sha256: str | None = None
    schema_fingerprint: str
    seq: int
    added_at: datetime
    removed_at: datetime | None = None


class QuarantinedFile(CatalogFile):
    """A file set aside because it cannot be compacted for a reason of its own (migration 0008)."""

    quarantined_at: datetime | None = None
    quarantined_by_run: UUID | None = None
    quarantine_step: str | None = None
    quarantine_reason: str | None = None


class QuarantineResult(_Model):
    quarantined: bool  # False: it already was (the first reason stands)
    file: QuarantinedFile


class ReadmitResult(_Model):
    readmitted: bool  # False: it was not quarantined
    file: QuarantinedFile


class DeleteQuarantinedResult(_Model):
    deleted: bool  # False: it was already removed
    file: QuarantinedFile


class QuarantineCount(_Model):
    files: int
    datasets: int
    rows: int
    oldest_at: datetime | None = None


class RegisteredFragment(CatalogFile):
    duplicate: bool
    dataset_created: bool


class Run(_Model):
    id: UUID
    dataset_id: UUID
    trigger: Trigger
    execution_id: str | None = None
    status: RunStatus
    status_reason: str | None = None
    step_timings: dict[str, float] = Field(default_factory=dict)
    files_in: int | None = None
    files_out: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    error_step: str | None = None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    committed_at: datetime | None = None


class RunTransition(Run):
    changed: bool


class LeaseResult(_Model):
    acquired: bool
    dataset: Dataset


class CompactedOutput(_Model):
    table_name: str
    object_key: str
    size_bytes: int = Field(ge=0)
    row_count: int = Field(ge=0)
    sha256: str | None = None
    schema_fingerprint: str
    input_ids: list[UUID] = Field(default_factory=list)


class CommitResult(_Model):
    committed: bool
    already_committed: bool
    compaction_needed: bool
    run: Run


class FailureRecorded(_Model):
    recorded: bool
    failure_id: int | None = None


class Failure(_Model):
    id: int
    source: Literal["dlq", "workflow"]
    message_id: str | None = None
    dataset_id: UUID | None = None
    run_id: UUID | None = None
    error_step: str | None = None
    error: str
    body: str | None = None
    at: datetime


class ExpiredLease(_Model):
    dataset_id: UUID
    run_id: UUID | None = None


class GarbageObject(_Model):
    id: UUID
    object_key: str


class DatasetStatus(_Model):
    dataset: Dataset
    files: list[CatalogFile]
    runs: list[Run]
    quarantined: list[QuarantinedFile] = Field(default_factory=list)


class RedrivableFailure(_Model):
    id: int
    dataset_id: UUID | None = None
    body: str


# The orphan sweeps (migration 0010).
class OrphanSweepWindow(_Model):
    """The touched sweep's window: datasets whose catalog rows changed in [window_from, window_until)."""

    acquired: bool  # False: another invocation holds the sweep's lease
    resumed: bool = False  # the window of an earlier invocation, not finished then
    window_from: datetime | None = None
    window_until: datetime | None = None
    pending: int = 0


class OrphanSweepDataset(_Model):
    dataset_id: UUID
    start_after: str | None = None  # the last key already examined (an earlier invocation ran out of time)


class OrphanSweepProgress(_Model):
    pending: int
    finished: bool  # the window is done: the watermark moved to its end
    watermark: datetime | None = None


class InventorySweep(_Model):
    """The inventory sweep's report: the one in progress (``resumed``) or the one due; ``report``
    None: nothing to do. ``file`` and ``rows``: every row before row ``rows`` of data file ``file``
    was examined."""

    acquired: bool
    report: str | None = None
    report_created_at: datetime | None = None
    file: int = 0
    rows: int = 0
    resumed: bool = False
