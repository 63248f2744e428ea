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
from fusou_compaction.logic.scheduled import continuation_event, continuation_of, scheduled_run
from fusou_compaction.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = parse(event=event, model=EventBridgeModel)
    deps = dependencies(NEEDS)
    hop = continuation_of(trigger.detail if isinstance(trigger.detail, dict) else None)
    report = scheduled_run(
        deps,
        claimer=f"scheduled:{trigger.id}",
        hop=hop,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        now=trigger.time,
    )
    if report.continue_later:
        assert deps.invoker is not None
        deps.invoker.invoke_async(context.invoked_function_arn, continuation_event(event, hop + 1))
    metrics.add_metric(name="DatasetsEnqueued", unit=MetricUnit.Count, value=len(report.drain.enqueued))
    metrics.add_metric(name="EnqueueFailures", unit=MetricUnit.Count, value=len(report.drain.failed))
    result = report.to_json_dict()
    # Counts only: a drained backlog is 100,000 ids, past a log event's 256 KB.
    logger.info(
        "scheduled compaction",
        extra={**result, "enqueued": len(report.drain.enqueued), "failed": len(report.drain.failed)},
    )
    return result


NEEDS = Needs("scheduled", queue=True, scheduled_queue=True, register_retry_queue=True)
cold_start(NEEDS)
