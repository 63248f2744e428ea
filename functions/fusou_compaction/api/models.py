"""Request and response bodies of the API: camelCase on the wire, frozen, no unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from fusou_compaction.keys import TABLE_NAME_RE
from fusou_compaction.logic.redrive import MAX_REDRIVE

SHA256_HEX = r"^[0-9a-f]{64}$"


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class UploadTarget(ApiModel):
    dataset_id: UUID
    table: str = Field(pattern=TABLE_NAME_RE.pattern)


class UploadResponse(ApiModel):
    dataset_id: UUID
    table: str
    fragment_id: UUID
    size_bytes: int
    row_count: int
    sha256: str
    duplicate: bool


class UploadUrlRequest(ApiModel):
    dataset_id: UUID
    table: str = Field(pattern=TABLE_NAME_RE.pattern)
    size_bytes: int = Field(gt=0, description="exact size of the file; the signed PUT accepts only this length")
    sha256: str = Field(pattern=SHA256_HEX, description="hex SHA-256 of the file; S3 checks it on the PUT")


class UploadUrlResponse(ApiModel):
    upload_id: UUID
    dataset_id: UUID
    table: str
    key: str
    url: str
    method: Literal["PUT"]
    headers: dict[str, str] = Field(description="send every one of these headers with the PUT, unchanged")
    expires_at: datetime


class DatasetRequest(ApiModel):
    dataset_id: UUID


class SanitizeResponse(ApiModel):
    message_id: str
    dataset_id: UUID


class TriggerRequest(ApiModel):
    limit: int | None = Field(default=None, ge=1, le=100, description="datasets to claim (default: the setting, 10)")


class TriggerResponse(ApiModel):
    enqueued: list[UUID]
    failed: dict[str, str]


class QueueDepthBody(ApiModel):
    visible: int
    in_flight: int
    oldest_age_seconds: int | None


class FailureBody(ApiModel):
    dataset_id: UUID | None
    run_id: UUID | None
    error_step: str | None
    error: str
    message: str | None = Field(description="the original message body, verbatim")
    at: datetime


class QuarantineCountBody(ApiModel):
    fragments: int = Field(description="files quarantined and not yet re-admitted or deleted")
    datasets: int
    rows: int
    oldest_at: datetime | None


class DlqStatusResponse(ApiModel):
    queue: QueueDepthBody
    dlq: QueueDepthBody
    recent_failures: list[FailureBody]
    quarantined: QuarantineCountBody


class FileBody(ApiModel):
    key: str
    kind: Literal["fragment", "compacted"]
    rows: int
    bytes: int


class TableBody(ApiModel):
    fragments: int
    compacted: int
    rows: int
    bytes: int
    files: list[FileBody]


class RunBody(ApiModel):
    run_id: UUID
    status: str
    trigger: str
    error_step: str | None
    error: str | None


class QuarantinedBody(ApiModel):
    fragment_id: UUID
    table: str
    key: str
    reason: str | None = Field(description="the engine's error and what it says of the file")
    step: str | None = Field(description="the pipeline step that set it aside")
    at: datetime | None
    run_id: UUID | None = Field(description="the run that set it aside")
    rows: int = Field(description="rows the catalog registered for it (in no table's count)")


class DatasetStatusResponse(ApiModel):
    dataset_id: UUID
    compaction_needed: bool
    tables: dict[str, TableBody]
    runs: list[RunBody]
    quarantined: list[QuarantinedBody]


class QuarantineAction(ApiModel):
    fragment_id: UUID
    action: Literal["readmit", "delete"] = Field(
        description="readmit: live again, compacted by the next run (after a fix); delete: removed, its object deleted"
    )


class QuarantineActionResponse(ApiModel):
    fragment_id: UUID
    dataset_id: UUID
    action: Literal["readmit", "delete"]
    changed: bool = Field(description="false if it was already done (the call is idempotent)")
    compaction_needed: bool


class RedriveRequest(ApiModel):
    max: int = Field(default=10, ge=1, le=MAX_REDRIVE, description="at most this many messages are moved")


class RedriveResponse(ApiModel):
    moved: int
    failed: int
