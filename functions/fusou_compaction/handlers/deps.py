"""The adapters a handler needs, built once per container from settings.

In AWS everything comes from settings and the secrets they name. Each handler module declares
what its function needs (:class:`Needs`) and calls :func:`cold_start` at import: in Lambda that
builds the dependencies during the init phase, so a function whose configuration is incomplete
fails there with an error naming everything missing, never on a default meant for somewhere else.
The local stack and tests install their own set with :func:`use_dependencies` (its orchestrator
is the in-process runner, not Step Functions).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.ports.inventory import InventoryReports
from fusou_compaction.ports.messaging import Alerts, Invoker, Orchestrator, Queue
from fusou_compaction.ports.object_store import ObjectStore
from fusou_compaction.settings import ConfigurationError, Settings, get_settings
from fusou_compaction.topology import inventory_report_prefix
from fusou_compaction.wiring import RuntimeConfig, aws_client, build_catalog

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
    config: RuntimeConfig | None = field(default=None, repr=False)
    register_retry: Queue | None = None  # only the scheduled function sends to it
    scheduled_queue: Queue | None = None  # the low-priority queue (scheduled function, consumer)
    invoker: Invoker | None = None  # the scheduled function continues a long drain in a new invocation
    inventory: InventoryReports | None = None  # the data bucket's S3 Inventory reports (scheduled function)

    @property
    def runtime(self) -> RuntimeConfig:
        """Settings plus the secrets they name (cached at most five minutes)."""
        if self.config is None or self.config.settings is not self.settings:
            self.config = RuntimeConfig(self.settings)
        return self.config

    @property
    def steps(self) -> CompactionSteps:
        # Imported here: only the step functions ship (and pay the import of) the Parquet engine.
        from fusou_compaction.logic.steps import CompactionSteps, StepConfig

        return CompactionSteps(self.catalog, self.store, StepConfig.from_settings(self.settings))


class _Holder:
    """The process's one set of dependencies (a Lambda container serves one function)."""

    lock = threading.Lock()
    current: Dependencies | None = None


@dataclass(frozen=True)
class Needs:
    """What one function needs from its configuration, checked at cold start."""

    function: str
    queue: bool = False
    scheduled_queue: bool = False
    dlq: bool = False
    register_retry_queue: bool = False
    state_machine: bool = False
    alerts: bool = False
    auth: bool = False

    def missing(self, config: RuntimeConfig) -> list[str]:
        s = config.settings
        missing = [
            f"FUSOU_{name.upper()}"
            for name, needed in (
                ("queue_url", self.queue),
                ("scheduled_queue_url", self.scheduled_queue),
                ("dlq_url", self.dlq),
                ("register_retry_queue_url", self.register_retry_queue),
                ("state_machine_arn", self.state_machine),
                ("alert_topic_arn", self.alerts),
            )
            if needed and not getattr(s, name)
        ]
        checks: list[Callable[[], object]] = [config.catalog_credentials] if s.catalog_transport == "supabase" else []
        if self.auth:
            checks.append(config.auth)
        for check in checks:
            try:
                check()
            except ConfigurationError as exc:
                missing.extend(exc.missing)
        return missing


def build_dependencies(settings: Settings, needs: Needs | None = None) -> Dependencies:
    """Every adapter from settings; with ``needs``, first checks that the function has what it
    needs and raises ConfigurationError naming all that is missing."""
    config = RuntimeConfig(settings)
    if needs is not None:
        missing = needs.missing(config)
        if missing:
            raise ConfigurationError(needs.function, missing)
    # Adapters (boto3 above all) are imported when first needed, not when a handler module loads.
    from fusou_compaction.adapters.alerts import LogAlerts, SnsAlerts
    from fusou_compaction.adapters.invoker import LambdaInvoker
    from fusou_compaction.adapters.s3 import S3ObjectStore
    from fusou_compaction.adapters.s3_inventory import S3InventoryReports
    from fusou_compaction.adapters.sqs import SqsQueue
    from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator

    sqs = aws_client(settings, "sqs")
    alerts: Alerts = (
        SnsAlerts(aws_client(settings, "sns"), settings.alert_topic_arn) if settings.alert_topic_arn else LogAlerts()
    )
    return Dependencies(
        settings=settings,
        catalog=build_catalog(config),
        store=S3ObjectStore(settings.bucket, region=settings.region, endpoint_url=settings.aws_endpoint_url),
        queue=SqsQueue(sqs, settings.queue_url, cloudwatch=aws_client(settings, "cloudwatch")),
        dlq=SqsQueue(sqs, settings.dlq_url, peek_for_age=True),
        orchestrator=StepFunctionsOrchestrator(aws_client(settings, "stepfunctions"), settings.state_machine_arn),
        alerts=alerts,
        config=config,
        register_retry=SqsQueue(sqs, settings.register_retry_queue_url) if settings.register_retry_queue_url else None,
        scheduled_queue=SqsQueue(sqs, settings.scheduled_queue_url) if settings.scheduled_queue_url else None,
        invoker=LambdaInvoker(lambda: aws_client(settings, "lambda")),
        inventory=S3InventoryReports(
            S3ObjectStore(settings.inventory_bucket, region=settings.region, endpoint_url=settings.aws_endpoint_url),
            inventory_report_prefix(settings.bucket),
        )
        if settings.inventory_bucket
        else None,
    )


def dependencies(needs: Needs | None = None) -> Dependencies:
    with _Holder.lock:
        if _Holder.current is None:
            _Holder.current = build_dependencies(get_settings(), needs)
        return _Holder.current


def cold_start(needs: Needs) -> None:
    """Build this function's dependencies now if running in Lambda (its init phase): an incomplete
    configuration then stops the function at cold start, naming what is missing. Elsewhere
    (tests, the local stack) nothing happens: they install dependencies themselves."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        dependencies(needs)


def use_dependencies(deps: Dependencies | None) -> None:
    with _Holder.lock:
        _Holder.current = deps
