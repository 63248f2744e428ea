"""EventBridge cron(0 2 * * ? *): re-send stranded uploads, drain every pending dataset into the
low-priority queue, sweep leases and garbage; a drain that outlasts the invocation continues in an
asynchronous invocation of this function (the same event, marked as its sequel)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.handlers.deps import Needs, cold_start, dependencies
from fusou_compaction.logic.scheduled import (
    continuation_event,
    continuation_of,
    housekeeping_pending,
    scheduled_run,
)
from fusou_compaction.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = parse(event=event, model=EventBridgeModel)
    deps = dependencies(NEEDS)
    detail = trigger.detail if isinstance(trigger.detail, dict) else None
    hop = continuation_of(detail)
    report = scheduled_run(
        deps,
        claimer=f"scheduled:{trigger.id}",
        hop=hop,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        now=trigger.time,
        with_housekeeping=housekeeping_pending(detail),
    )
    if report.continue_later:
        assert deps.invoker is not None
        sequel = continuation_event(event, hop + 1, housekeeping=report.housekeeping_left)
        deps.invoker.invoke_async(context.invoked_function_arn, sequel)
    metrics.add_metric(name="DatasetsEnqueued", unit=MetricUnit.Count, value=len(report.drain.enqueued))
    metrics.add_metric(name="EnqueueFailures", unit=MetricUnit.Count, value=len(report.drain.failed))
    if report.house is not None:
        metrics.add_metric(name="OrphansDeleted", unit=MetricUnit.Count, value=report.house.orphans_deleted)
        if report.house.inventory is not None:
            # Keys under no prefix of ours: never deleted, worth a look (dashboard, logs name some).
            metrics.add_metric(name="UnknownObjects", unit=MetricUnit.Count, value=report.house.inventory.unknown)
    result = report.to_json_dict()
    # Counts only: a drained backlog is 100,000 ids, past a log event's 256 KB.
    logger.info(
        "scheduled compaction",
        extra={**result, "enqueued": len(report.drain.enqueued), "failed": len(report.drain.failed)},
    )
    return result


NEEDS = Needs("scheduled", queue=True, scheduled_queue=True, register_retry_queue=True)
cold_start(NEEDS)
