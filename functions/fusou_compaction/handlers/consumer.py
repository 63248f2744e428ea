"""SQS (the main queue and the low-priority scheduled queue) → Step Functions, within the global
budget. Partial batch failures: one bad message never re-drives its neighbours."""

from __future__ import annotations

from typing import Any, Self

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import model_validator

from fusou_compaction.handlers.deps import Dependencies, Needs, cold_start, dependencies
from fusou_compaction.logic.consumer import Deferral, start_compaction
from fusou_compaction.observability import logger, metrics, tracer
from fusou_compaction.pipeline.models import CompactionMessage


class CompactionRecord(SqsRecordModel):
    """An SQS record whose body is the seed's message; the raw body is kept for the DLQ."""

    message: CompactionMessage | None = None

    @model_validator(mode="after")
    def _parse_body(self) -> Self:
        self.message = CompactionMessage.model_validate_json(str(self.body))
        return self


processor = BatchProcessor(event_type=EventType.SQS, model=CompactionRecord)


def deferral_for(deps: Dependencies) -> Deferral:
    """Refused scheduled work waits in the low-priority queue; manual and realtime in the main one."""
    scheduled = deps.scheduled_queue or deps.queue
    return Deferral(
        {"manual": deps.queue, "realtime": deps.queue, "scheduled": scheduled},
        base_seconds=deps.settings.defer_base_seconds,
        max_seconds=deps.settings.defer_max_seconds,
    )


@tracer.capture_method
def record_handler(record: CompactionRecord) -> str:
    assert record.message is not None  # set by the model's validator
    deps = dependencies(NEEDS)
    outcome = start_compaction(
        record.message,
        message_id=record.messageId,
        body=str(record.body),
        catalog=deps.catalog,
        orchestrator=deps.orchestrator,
        admission=deps.settings.admission,
        deferral=deferral_for(deps),
    )
    logger.info(
        "compaction message",
        extra={"messageId": record.messageId, "outcome": outcome, "datasetId": str(record.message.dataset_id)},
    )
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


NEEDS = Needs("consumer", queue=True, scheduled_queue=True, state_machine=True)
cold_start(NEEDS)
