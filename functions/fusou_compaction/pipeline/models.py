"""Pydantic models at the pipeline's boundaries: the queue's wire format and each step's I/O.

Wire and state payloads are camelCase JSON (the seed's message is), Python is snake_case.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Priority = Literal["manual", "scheduled", "realtime"]
SchemaSource = Literal["catalog", "footers", "catalog-missed"]
# A fixed namespace: the run id of a message is the same on every delivery.
RUN_NAMESPACE = UUID("0b1f8f5e-6c1e-4d5e-9a36-2f4c6a9b7e11")


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class CompactionMessage(Wire):
    """The queue's body: ``{"datasetId", "triggeredAt", "priority"}``; extra fields are ignored."""

    dataset_id: UUID
    triggered_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    priority: Priority = "manual"


def run_id_for(message_id: str) -> UUID:
    return uuid.uuid5(RUN_NAMESPACE, message_id)


def execution_name_for(dataset_id: UUID, message_id: str) -> str:
    # Step Functions names: ≤ 80 chars of [0-9A-Za-z_-]. Same message → same name → no second run.
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in message_id)
    return f"{dataset_id}-{safe}"[:80]


class ExecutionInput(Wire):
    """What the consumer starts the state machine with (and what the DLQ gets back on failure)."""

    message: CompactionMessage
    message_id: str
    body: str  # the original body, forwarded verbatim to the DLQ on failure
    run_id: UUID
    execution_name: str


class ValidateResult(Wire):
    action: Literal["compact", "skip"]
    reason: str | None = None
    lease_expires_at: datetime | None = None


class BinInput(Wire):
    """One input file of a bin, as the engine needs it."""

    id: UUID
    key: str
    size_bytes: int
    row_count: int
    seq: int
    kind: Literal["fragment", "compacted"]
    # Lets the Compact step find the bin's unified schema in the catalog (None: plans made before
    # it was recorded; the engine then reads footers first).
    schema_fingerprint: str | None = None


class PlannedBin(Wire):
    table: str
    index: int
    estimated_bytes: int
    inputs: list[BinInput]


class BinRef(Wire):
    """A Map item: which bin to compact. Carries the inputs inline when they are small (one child
    execution's input is capped at 256 KB); otherwise Compact reads them from S3."""

    table: str
    index: int
    input_count: int
    inputs: list[BinInput] | None = None


class PlanResult(Wire):
    """GetMetadata's output, in the state: where the plan is, never the plan, so its size does not
    grow with the dataset. The bins are a JSON array at ``items_key`` (the Compact Map reads it);
    the Map writes its results under ``results_prefix``."""

    plan_key: str  # the run's plan prefix, plans/<run>/
    items_key: str
    results_prefix: str
    bin_count: int
    files_planned: int
    bytes_planned: int
    rows_planned: int
    # The bins themselves, in memory only (never in the state, excluded from the JSON): what the
    # items file holds, for callers that run the steps without the state machine.
    bins: list[BinRef] = Field(default_factory=list, exclude=True)


class CompactItem(Wire):
    """The input of one Compact invocation (built by the Map's ItemSelector)."""

    run_id: UUID
    dataset_id: UUID
    plan_key: str | None = None
    bin: BinRef


class ResultWriterDetails(Wire):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    bucket: str = Field(alias="Bucket")
    key: str = Field(alias="Key")


class MapRunOutput(Wire):
    """A Distributed Map's output with a ResultWriter: the Map Run and its manifest's location."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    map_run_arn: str = Field(alias="MapRunArn")
    result_writer_details: ResultWriterDetails = Field(alias="ResultWriterDetails")


class OutputRecord(Wire):
    table: str
    key: str
    rows: int
    bytes: int
    sha256: str | None
    schema_fingerprint: str
    input_ids: list[UUID]


class QuarantinedInput(Wire):
    """An input of the bin set aside in the catalog (quarantine_file) instead of compacted."""

    id: UUID
    key: str
    rows: int
    reason: str


class BinManifest(Wire):
    """Everything a bin produced; written to S3 so Update never depends on the state payload size."""

    run_id: UUID
    table: str
    index: int
    input_ids: list[UUID]  # what the outputs replace; never a quarantined input
    outputs: list[OutputRecord]
    rows_in: int
    bytes_in: int
    seconds: float
    # Where the bin's unified schema came from: "catalog" (each input read once), "footers" (a
    # schema unknown to the catalog, or several schema groups), "catalog-missed" (an input did
    # not fit the catalog's schema; the bin was done again from the footers).
    schema_source: SchemaSource = "footers"
    # Inputs of the bin that could not be compacted for a reason of their own: quarantined in the
    # catalog (by this attempt or an earlier one of the same run), left out of input_ids.
    quarantined: list[QuarantinedInput] = Field(default_factory=list)


class CompactResult(Wire):
    table: str
    index: int
    manifest_key: str
    rows_in: int
    rows_out: int
    files_out: int
    bytes_out: int
    quarantined: int = 0  # inputs of the bin quarantined instead of compacted


class UpdateResult(Wire):
    committed: bool
    already_committed: bool
    compaction_needed: bool
    files_in: int
    files_out: int
    rows_in: int
    rows_out: int
    bytes_in: int
    bytes_out: int


class StepError(Wire):
    """Step Functions' Catch output: ``{"Error": name, "Cause": text}``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    error: str = Field(alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class FailureInput(Wire):
    """RecordFailure's input: the state so far plus ``failure: {<StepName>: {Error, Cause}}``."""

    execution: ExecutionInput
    failure: dict[str, StepError]
    plan: PlanResult | None = None  # where a failed Compact Map wrote its children's errors


class DlqEnvelope(Wire):
    """What the failure path sends to the DLQ: the original message plus what went wrong."""

    kind: Literal["workflow-failure"] = "workflow-failure"
    message: dict[str, Any] | None
    body: str
    message_id: str
    dataset_id: UUID | None
    run_id: UUID | None
    error_step: str
    error: str
    cause: str | None = None
