"""DLQ → main queue, by hand (moto has no StartMessageMoveTask; this works on both).

Send first, delete second: a crash between the two leaves a copy in each queue (the consumer is
idempotent per dataset lease), never a message in neither. A message whose send fails is not
deleted; it reappears in the DLQ when its visibility timeout ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.pipeline.models import DlqEnvelope
from fusou_compaction.ports.messaging import Queue

MAX_REDRIVE = 100
# Long enough to send and delete a batch; short enough that a failed one is retried soon.
REDRIVE_VISIBILITY_SECONDS = 30


@dataclass
class RedriveReport:
    moved: int = 0
    failed: int = 0
    from_records: int = 0  # of ``moved``: re-sent from the failures table
    errors: list[str] = field(default_factory=list)


def original_body(body: str) -> str:
    """The body to put back on the main queue.

    The workflow's failure path wraps the original message in an envelope; redriving the envelope
    would start a run from the failure record, so the original body goes back instead.
    """
    try:
        return DlqEnvelope.model_validate_json(body).body
    except ValidationError:
        return body


def redrive(dlq: Queue, queue: Queue, *, max_messages: int) -> RedriveReport:
    if not 1 <= max_messages <= MAX_REDRIVE:
        raise ValueError(f"max_messages must be between 1 and {MAX_REDRIVE}")
    report = RedriveReport()
    while report.moved + report.failed < max_messages:
        want = max_messages - report.moved - report.failed
        batch = dlq.receive(min(want, 10), wait_seconds=0, visibility_timeout=REDRIVE_VISIBILITY_SECONDS)
        if not batch:
            break
        for m in batch[:want]:
            try:
                queue.send(original_body(m.body))
            except Exception as exc:  # keep it in the DLQ; it is visible again after the timeout
                report.failed += 1
                report.errors.append(f"{m.message_id}: {exc}")
                continue
            dlq.delete(m.receipt_handle)
            report.moved += 1
    return report


def redrive_all(dlq: Queue, queue: Queue, catalog: Catalog, *, max_messages: int) -> RedriveReport:
    """Messages still in the DLQ first, then recorded failures (the DLQ Lambda acknowledges what it
    records, so after it ran the record is the only copy left)."""
    report = redrive(dlq, queue, max_messages=max_messages)
    budget = max_messages - report.moved - report.failed
    if budget <= 0:
        return report
    sent: list[int] = []
    for failure in catalog.list_redrivable_failures(budget):
        try:
            queue.send(original_body(failure.body))
        except Exception as exc:
            report.failed += 1
            report.errors.append(f"failure {failure.id}: {exc}")
            continue
        sent.append(failure.id)
    # Marked after sending: a crash in between re-sends later (a duplicate run is skipped by the
    # lease) rather than losing the message.
    if sent:
        catalog.mark_failures_redriven(sent)
    report.moved += len(sent)
    report.from_records += len(sent)
    return report
