"""Step Functions task handlers: parse the state, call one step, return JSON."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.handlers.deps import Needs, cold_start, dependencies
from fusou_compaction.logic.steps import state_input
from fusou_compaction.observability import logger, metrics, tracer
from fusou_compaction.pipeline.models import CompactItem, FailureInput, MapRunOutput, PlanResult


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def validate(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dependencies(NEEDS).steps.validate(state_input(event)).to_json_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def get_metadata(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dependencies(NEEDS).steps.get_metadata(state_input(event)).to_json_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def compact(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = dependencies(NEEDS).steps.compact(CompactItem.model_validate(event))
    metrics.add_metric(name="BytesCompacted", unit=MetricUnit.Bytes, value=result.bytes_out)
    metrics.add_metric(name="RowsCompacted", unit=MetricUnit.Count, value=result.rows_out)
    if result.quarantined:
        metrics.add_metric(name="FragmentsQuarantined", unit=MetricUnit.Count, value=result.quarantined)
    return result.to_json_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def update(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    steps = dependencies(NEEDS).steps
    # The Compact Map's results are in S3 (its ResultWriter's export), not in the state.
    results = steps.compact_results(MapRunOutput.model_validate(event["compact"]))
    result = steps.update(state_input(event), PlanResult.model_validate(event["plan"]), results)
    metrics.add_metric(name="FilesCompacted", unit=MetricUnit.Count, value=result.files_in)
    metrics.add_metric(name="FilesWritten", unit=MetricUnit.Count, value=result.files_out)
    return result.to_json_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def record_failure(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    envelope = dependencies(NEEDS).steps.record_failure(FailureInput.model_validate(event))
    metrics.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
    logger.error("compaction run failed", extra={"failure": envelope.to_json_dict()})
    return envelope.to_json_dict()


NEEDS = Needs("steps")
cold_start(NEEDS)
