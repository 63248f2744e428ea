"""S3 ObjectCreated under ``staging/`` → validate and register a presigned upload (logic/presigned.py).

Two event sources, one function:
- S3's notification, invoked asynchronously. An error (the catalog down for a while) is retried
  twice by Lambda, then the event goes to the on-failure destination, an SQS queue;
- that queue (``<stage>-kc-compaction-register-retry``), whose records wrap the original S3 event:
  each is registered again, and one that fails is retried after the queue's visibility timeout,
  until the queue moves it to its own DLQ (alarmed). So no staged upload is dropped silently
  while its object lives (the staging prefix expires after 2 days). Registering is idempotent:
  an upload already handled is ``gone``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import S3Model, SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from fusou_compaction.handlers.deps import Needs, cold_start, dependencies
from fusou_compaction.logic.presigned import RegisterOutcome, register_staged_upload
from fusou_compaction.observability import logger, metrics, tracer


class FailedInvocation(BaseModel):
    """What Lambda sends an on-failure destination: the original event and why it failed."""

    model_config = ConfigDict(extra="ignore")

    requestPayload: S3Model
    responsePayload: dict[str, Any] | None = None


def _register(notification: S3Model) -> list[RegisterOutcome]:
    deps = dependencies(NEEDS)
    outcomes = []
    for record in notification.Records:
        key = unquote_plus(record.s3.object.key) if record.s3.object else ""
        if record.s3.bucket.name != deps.store.bucket:
            outcomes.append(RegisterOutcome(key, "ignored", "another bucket"))
        else:
            outcomes.append(register_staged_upload(deps, key))
    return outcomes


# Every failed record is reported (not raised), so one batch's failures read the same however many fail.
retry_processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel, raise_on_entire_batch_failure=False)


def _retry_record(record: SqsRecordModel) -> None:
    failed = FailedInvocation.model_validate_json(str(record.body))
    outcomes = _register(failed.requestPayload)
    metrics.add_metric(name="RegisterRetried", unit=MetricUnit.Count, value=1)
    logger.info(
        "presigned upload registered on retry",
        extra={"messageId": record.messageId, "outcomes": [o.to_json_dict() for o in outcomes]},
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:sqs":
        return dict(
            process_partial_response(
                event=event, record_handler=_retry_record, processor=retry_processor, context=context
            )
        )
    from aws_lambda_powertools.utilities.parser import parse

    outcomes = _register(parse(event=event, model=S3Model))
    logger.info("presigned uploads", extra={"outcomes": [o.to_json_dict() for o in outcomes]})
    return {"results": [o.to_json_dict() for o in outcomes]}


NEEDS = Needs("register", queue=True)
cold_start(NEEDS)
