"""EventBridge cron(0 2 * * ? *): re-send stranded uploads, enqueue pending datasets, then sweep
leases and garbage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.handlers.deps import Needs, cold_start, dependencies
from fusou_compaction.logic.presigned import resend_stranded_uploads
from fusou_compaction.logic.scheduled import claim_and_enqueue, housekeeping
from fusou_compaction.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = parse(event=event, model=EventBridgeModel)
    deps = dependencies(NEEDS)
    s = deps.settings
    stranded = resend_stranded_uploads(deps, min_age=timedelta(seconds=s.staging_min_age_seconds))
    report = claim_and_enqueue(
        deps.catalog,
        deps.queue,
        limit=s.scheduled_claim_limit,
        claimer=f"scheduled:{trigger.id}",
        claim_seconds=s.claim_seconds,
        backoff=s.retry_backoff,
        now=trigger.time,
    )
    house = housekeeping(deps.catalog, deps.store, orphan_min_age=timedelta(seconds=s.orphan_min_age_seconds))
    metrics.add_metric(name="DatasetsEnqueued", unit=MetricUnit.Count, value=len(report.enqueued))
    metrics.add_metric(name="EnqueueFailures", unit=MetricUnit.Count, value=len(report.failed))
    result = {
        "enqueued": [str(d) for d in report.enqueued],
        "failed": {str(d): reason for d, reason in report.failed.items()},
        "expiredLeases": house.expired_leases,
        "garbageDeleted": house.garbage_deleted,
        "orphansDeleted": house.orphans_deleted,
        "strandedUploadsResent": len(stranded.resent),
        "errors": stranded.errors + house.errors,
    }
    logger.info("scheduled compaction", extra=result)
    return result


NEEDS = Needs("scheduled", queue=True, register_retry_queue=True)
cold_start(NEEDS)
