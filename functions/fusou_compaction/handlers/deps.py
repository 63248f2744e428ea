"""The adapters a handler needs, built once per container from settings.

In AWS everything comes from settings. The local stack and tests install their own set with
:func:`use_dependencies` (its orchestrator is the in-process runner, not Step Functions).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.ports.messaging import Alerts, Orchestrator, Queue
from fusou_compaction.ports.object_store import ObjectStore
from fusou_compaction.settings import Settings, get_settings
from fusou_compaction.wiring import aws_client, build_catalog

if TYPE_CHECKING:
    from fusou_compaction.logic.steps import CompactionSteps


@dataclass
class Dependencies:
    settings: Settings
    catalog: Catalog
    store: ObjectStore
    queue: Queue
    dlq: Queue
    orchestrator: Orchestrator
    alerts: Alerts

    @property
    def steps(self) -> CompactionSteps:
        # Imported here: only the step functions ship (and pay the import of) the Parquet engine.
        from fusou_compaction.logic.steps import CompactionSteps, StepConfig

        return CompactionSteps(self.catalog, self.store, StepConfig.from_settings(self.settings))


class _Holder:
    """The process's one set of dependencies (a Lambda container serves one function)."""

    lock = threading.Lock()
    current: Dependencies | None = None


def build_dependencies(settings: Settings) -> Dependencies:
    # Adapters (boto3 above all) are imported when first needed, not when a handler module loads.
    from fusou_compaction.adapters.alerts import LogAlerts, SnsAlerts
    from fusou_compaction.adapters.s3 import S3ObjectStore
    from fusou_compaction.adapters.sqs import SqsQueue
    from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator

    sqs = aws_client(settings, "sqs")
    alerts: Alerts = (
        SnsAlerts(aws_client(settings, "sns"), settings.alert_topic_arn) if settings.alert_topic_arn else LogAlerts()
    )
    return Dependencies(
        settings=settings,
        catalog=build_catalog(settings),
        store=S3ObjectStore(settings.bucket, region=settings.region, endpoint_url=settings.aws_endpoint_url),
        queue=SqsQueue(sqs, settings.queue_url, cloudwatch=aws_client(settings, "cloudwatch")),
        dlq=SqsQueue(sqs, settings.dlq_url, peek_for_age=True),
        orchestrator=StepFunctionsOrchestrator(aws_client(settings, "stepfunctions"), settings.state_machine_arn),
        alerts=alerts,
    )


def dependencies() -> Dependencies:
    with _Holder.lock:
        if _Holder.current is None:
            _Holder.current = build_dependencies(get_settings())
        return _Holder.current


def use_dependencies(deps: Dependencies | None) -> None:
    with _Holder.lock:
        _Holder.current = deps
