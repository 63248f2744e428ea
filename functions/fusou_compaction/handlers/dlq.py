"""DLQ → record, metric, alert. Always succeeds: a DLQ that redelivers forever helps nobody."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.handlers.deps import Needs, cold_start, dependencies
from fusou_compaction.logic.dlq import handle_dlq_message
from fusou_compaction.observability import logger, metrics, tracer
from fusou_compaction.topology import QUEUES

processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)


def record_handler(record: SqsRecordModel) -> None:
    deps = dependencies(NEEDS)
    receives = record.attributes.ApproximateReceiveCount
    try:
        rec, new = handle_dlq_message(
            str(record.body),
            message_id=record.messageId,
            receive_count=int(receives) if receives else None,
            max_receive_count=QUEUES.max_receive_count,  # the main queue's redrive policy (infra: queues)
            source_arn=record.attributes.DeadLetterQueueSourceArn,
            catalog=deps.catalog,
            alerts=deps.alerts,
        )
    except Exception:
        # Keep the message in the logs (retained) rather than loop; the metric pages someone.
        logger.exception("could not record a DLQ message", extra={"messageId": record.messageId, "body": record.body})
        metrics.add_metric(name="DlqRecordErrors", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="DlqMessages", unit=MetricUnit.Count, value=1)
    logger.error(
        "compaction failure reached the DLQ",
        extra={
            "messageId": record.messageId,
            "datasetId": str(rec.dataset_id),
            "runId": str(rec.run_id),
            "errorStep": rec.error_step,
            "error": rec.error,
            "new": new,
        },
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


NEEDS = Needs("dlq", alerts=True)
cold_start(NEEDS)
