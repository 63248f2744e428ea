"""S3 ObjectCreated under ``staging/`` → validate and register a presigned upload (logic/presigned.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.handlers.deps import dependencies
from fusou_compaction.logic.presigned import RegisterOutcome, register_staged_upload
from fusou_compaction.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.parser import parse
    from aws_lambda_powertools.utilities.parser.models import S3Model

    notification = parse(event=event, model=S3Model)
    deps = dependencies()
    outcomes = []
    for record in notification.Records:
        key = unquote_plus(record.s3.object.key) if record.s3.object else ""
        if record.s3.bucket.name != deps.store.bucket:
            outcomes.append(RegisterOutcome(key, "ignored", "another bucket"))
        else:
            outcomes.append(register_staged_upload(deps, key))
    logger.info("presigned uploads", extra={"outcomes": [o.to_json_dict() for o in outcomes]})
    return {"results": [o.to_json_dict() for o in outcomes]}
