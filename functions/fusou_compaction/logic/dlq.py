"""DLQ logic: record what failed, alert, and always let the message go (no redelivery loops)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.pipeline.models import CompactionMessage, DlqEnvelope
from fusou_compaction.ports.messaging import Alerts

CONSUMER_STEP = "Consumer"


@dataclass(frozen=True)
class DlqRecord:
    dataset_id: UUID | None
    run_id: UUID | None
    error_step: str
    error: str
    body: str
    message_id: str


def moved_after(receive_count: int | None, max_receive_count: int, source_arn: str | None) -> int | None:
    """How many receives made the queue move this message to the DLQ, or None if it did not.

    SQS moves a message once it has been received ``maxReceiveCount`` times, and the count goes with
    it: the DLQ's own receives are added on top (4 on the DLQ's first receive, more if the DLQ
    function is retried), so the DLQ's ApproximateReceiveCount is never the count that moved it.
    A message sent to the DLQ directly has no source and a count of its own receives only."""
    moved = source_arn is not None or (receive_count is not None and receive_count > max_receive_count)
    return max_receive_count if moved else None


def describe(
    body: str, message_id: str, receive_count: int | None, *, max_receive_count: int, source_arn: str | None = None
) -> DlqRecord:
    """What a DLQ message says: a workflow failure envelope, or a message the consumer never took."""
    try:
        env = DlqEnvelope.model_validate_json(body)
    except ValidationError:
        env = None
    if env is not None:
        return DlqRecord(env.dataset_id, env.run_id, env.error_step, env.error, env.body, env.message_id)
    dataset_id: UUID | None
    try:
        dataset_id = CompactionMessage.model_validate_json(body).dataset_id
        reason = "the consumer could not start a run (unknown dataset or orchestrator failure)"
    except ValidationError as exc:
        dataset_id = None
        reason = f"invalid message: {exc.errors()[0]['msg'] if exc.errors() else exc}"
    receives = moved_after(receive_count, max_receive_count, source_arn)
    tries = f" after {receives} receives" if receives else ""
    return DlqRecord(dataset_id, None, CONSUMER_STEP, f"{reason}{tries}", body, message_id)


def handle_dlq_message(
    body: str,
    *,
    message_id: str,
    receive_count: int | None,
    max_receive_count: int,
    source_arn: str | None = None,
    catalog: Catalog,
    alerts: Alerts,
) -> tuple[DlqRecord, bool]:
    """Returns the record and whether it was new (a redelivered DLQ message is recorded once)."""
    rec = describe(body, message_id, receive_count, max_receive_count=max_receive_count, source_arn=source_arn)
    result = catalog.record_failure(
        source="dlq",
        error=rec.error,
        message_id=rec.message_id,
        dataset_id=rec.dataset_id,
        run_id=rec.run_id,
        error_step=rec.error_step,
        body=rec.body,
    )
    if result.recorded:
        alert: dict[str, Any] = {
            "datasetId": rec.dataset_id,
            "runId": rec.run_id,
            "errorStep": rec.error_step,
            "error": rec.error,
            "messageId": rec.message_id,
        }
        alerts.publish(f"FUSOU compaction failed at {rec.error_step}", alert)
    return rec, result.recorded
