"""The whole system on 127.0.0.1: moto (S3, SQS), PostgreSQL, the API, queue pollers, the step runner.

Everything AWS would run is the real handler code; only the glue differs: pollers stand in for
Lambda's event source mappings, the local runner for Step Functions, a timer for EventBridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from fusou_compaction import keys
from fusou_compaction.adapters.alerts import LogAlerts
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.s3_inventory import S3InventoryReports
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.migrate import migrate
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.handlers import consumer as consumer_handler
from fusou_compaction.handlers import dlq as dlq_handler
from fusou_compaction.handlers import register as register_handler
from fusou_compaction.handlers import scheduled as scheduled_handler
from fusou_compaction.handlers import steps as step_handlers
from fusou_compaction.handlers.deps import Dependencies, use_dependencies
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.local.concurrency import AccountConcurrency, ReservedConcurrency
from fusou_compaction.local.console import Feed, dlq_lines, register_lines, run_summary, scheduled_line, short
from fusou_compaction.local.endpoints import Endpoints
from fusou_compaction.local.inventory import publish_inventory_report
from fusou_compaction.local.lambda_process import LambdaFunction, settings_environment
from fusou_compaction.local.postgres import PostgresServer, reachable_by_server
from fusou_compaction.local.runner import Execution, Handler, LocalContext, LocalRunner, LocalStepFunctions
from fusou_compaction.local.s3events import S3EventInvoker, notification_configuration
from fusou_compaction.local.s3persist import KeptBucket, moto_s3_backend
from fusou_compaction.observability import logger
from fusou_compaction.pipeline.definition import build_pipeline
from fusou_compaction.ports.messaging import ReceivedMessage
from fusou_compaction.settings import LOCAL_JWT_ISSUER, Settings
from fusou_compaction.topology import (
    COMPACT_LAMBDA,
    QUEUES,
    REGISTER,
    bucket_name,
    dlq_name,
    inventory_report_prefix,
    queue_name,
    register_retry_dlq_name,
    register_retry_queue_name,
    scheduled_queue_name,
)

STEP_HANDLERS = {
    "validate": step_handlers.validate,
    "get_metadata": step_handlers.get_metadata,
    "compact": step_handlers.compact,
    "update": step_handlers.update,
    "record_failure": step_handlers.record_failure,
}


@dataclass
class StackOptions:
    data_dir: Path = Path(".fusou")
    api_port: int = 0
    aws_port: int = 0
    pg_port: int = 0
    stage: str = "dev"
    # Lambda's event source mappings wait up to 30 s / 60 s to fill a batch; locally we wait less so
    # a message is picked up at once. Batch sizes are the deployed ones.
    consumer_window_seconds: float = 1.0
    dlq_window_seconds: float = 2.0
    # A failed message is visible again after this long (AWS: the queue's visibility timeout), so a
    # poison message reaches the DLQ after its third receive within seconds.
    retry_visibility_seconds: int = 1
    step_time_scale: float = 0.05  # Step Functions retry delays, scaled down
    target_file_size: int = 128 * 1024 * 1024
    lease_seconds: int = 900
    grace_period_seconds: int = 24 * 3600
    scheduled_claim_limit: int = 10
    scheduled_page_size: int = 1000
    # The global budget (Compact's reserved concurrency and the consumer's admissions), sized for
    # a laptop; a refused message waits base..max seconds (AWS: 5..900) before it is received again.
    compaction_budget: int = 4
    # The account's concurrent executions (None: unbounded, as the default 1,000 is for a laptop's
    # load). Compact reserves compaction_budget of it; the other step functions share the rest and
    # get Lambda.TooManyRequestsException past it.
    account_concurrency: int | None = None
    high_priority_reserve: int = 1
    defer_base_seconds: int = 1
    defer_max_seconds: int = 4
    # A presigned upload's failed registration: Lambda retries after ~1 and ~2 min, the retry queue
    # every 30 min; locally after these (seconds). The scheduled run's staging sweep waits as deployed.
    register_async_retry_delay_seconds: float = 0.5
    register_retry_visibility_seconds: int = 5
    staging_min_age_seconds: int = 3600
    retry_backoff_base_seconds: int = 1800
    retry_backoff_max_seconds: int = 7 * 86_400
    run_daily_schedule: bool = True
    serve_api: bool = True
    # Keep the catalog (PostgreSQL's data directory) and the bucket's objects under data_dir, so a
    # stack started again on it resumes, even after kill -9 (`dev`); otherwise both are throwaway.
    persist: bool = False
    # Each Compact invocation runs in a process held to the deployed function's memory (and its
    # timeout), as Lambda holds it; None runs it in this process, unlimited.
    compact_memory_mb: int | None = COMPACT_LAMBDA.memory_mb
    # Where one readable line per event goes (`dev`: the terminal); the handlers' own JSON logs and
    # metrics go wherever the process sends them (`dev`: a file under data_dir).
    feed: Feed | None = None


def catalog_dir(data_dir: Path) -> Path:
    """Where a kept stack's PostgreSQL lives: ``data_dir/catalog``. As root the server runs as the
    ``postgres`` user; if that user cannot reach data_dir (under /root, say), the cluster lives in
    /var/tmp under a name derived from data_dir, and ``data_dir/catalog`` links to it."""
    wanted = data_dir / "catalog"
    if wanted.is_symlink() or wanted.exists() or reachable_by_server(data_dir):
        return wanted
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    elsewhere = Path("/var/tmp") / f"fusou-catalog-{digest}"  # noqa: S108 (a fixed, per-data-dir name)
    elsewhere.mkdir(mode=0o700, exist_ok=True)
    wanted.symlink_to(elsewhere, target_is_directory=True)
    logger.warning(
        f"the postgres user cannot reach {data_dir}: the catalog is kept in {elsewhere} ({wanted} links to it)"
    )
    return wanted


class QueuePoller(threading.Thread):
    """One event source mapping: gather a batch, invoke the handler, honour partial failures."""

    def __init__(
        self,
        name: str,
        queue: SqsQueue,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        batch_size: int,
        window_seconds: float,
        retry_visibility_seconds: int,
        region: str,
        queue_arn: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.queue = queue
        self.handler = handler
        self.batch_size = batch_size
        self.window = window_seconds
        self.retry_visibility = retry_visibility_seconds
        self.region = region
        self.queue_arn = queue_arn
        self.stop_event = threading.Event()
        self.batches = 0

    def _gather(self) -> list[ReceivedMessage]:
        batch: list[ReceivedMessage] = []
        deadline: float | None = None
        while not self.stop_event.is_set() and len(batch) < self.batch_size:
            got = self.queue.receive(self.batch_size - len(batch), wait_seconds=0)
            if got:
                batch.extend(got)
                deadline = deadline or time.monotonic() + self.window
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not got:
                time.sleep(0.1)
        return batch

    def _event(self, batch: list[ReceivedMessage]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": {
                        "ApproximateReceiveCount": m.attributes.get("ApproximateReceiveCount", "1"),
                        "SentTimestamp": m.attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                        "SenderId": m.attributes.get("SenderId", "local"),
                        "ApproximateFirstReceiveTimestamp": m.attributes.get(
                            "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                        ),
                    },
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
                for m in batch
            ]
        }

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                batch = self._gather()
                if not batch:
                    continue
                self.batches += 1
                try:
                    response = self.handler(self._event(batch), LocalContext(function_name=self.name)) or {}
                    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                except Exception:
                    # As Lambda does: an invocation error (Powertools raises when every record
                    # failed) returns the whole batch to the queue.
                    logger.warning(f"{self.name}: the whole batch failed", exc_info=True)
                    failed = {m.message_id for m in batch}
                for m in batch:
                    if m.message_id in failed:
                        self.queue.change_visibility(m.receipt_handle, self.retry_visibility)
                    else:
                        self.queue.delete(m.receipt_handle)
            except Exception:  # a poller must outlive any one bad batch
                logger.exception(f"{self.name} poller error")
                time.sleep(0.5)

    def stop(self) -> None:
        self.stop_event.set()


class LocalInvoker:
    """Lambda's asynchronous Invoke, locally: the function (named by its key's suffix) runs on its
    own thread; its failure is logged, as an asynchronous invocation's would be."""

    def __init__(self, functions: dict[str, Callable[[dict[str, Any]], None]]) -> None:
        self.functions = functions

    def invoke_async(self, function: str, event: dict[str, Any]) -> None:
        key = function.rsplit(":", 1)[-1].removeprefix("local-")
        target = self.functions[key]

        def run() -> None:
            try:
                target(event)
            except Exception:
                logger.exception(f"asynchronous invocation of {key} failed")

        threading.Thread(target=run, name=f"invoke-{key}", daemon=True).start()


class DailySchedule(threading.Thread):
    """EventBridge's cron(0 2 * * ? *), locally."""

    def __init__(self, fire: Callable[[], Any]) -> None:
        super().__init__(name="schedule", daemon=True)
        self.fire = fire
        self.stop_event = threading.Event()

    @staticmethod
    def next_run(now: datetime) -> datetime:
        today = now.replace(hour=2, minute=0, second=0, microsecond=0)
        return today if now < today else today + timedelta(days=1)

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = datetime.now(UTC)
            if self.stop_event.wait((self.next_run(now) - now).total_seconds()):
                return
            try:
                self.fire()
            except Exception:
                logger.exception("scheduled run failed")

    def stop(self) -> None:
        self.stop_event.set()


def scheduled_event(now: datetime | None = None) -> dict[str, Any]:
    """An EventBridge scheduled event, as the rule delivers it."""
    now = now or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/dev-kc-compaction-daily"],
        "detail": {},
    }


@dataclass
class LocalStack:
    options: StackOptions = field(default_factory=StackOptions)
    pg: PostgresServer | None = None
    aws: LocalAws | None = None
    endpoints: Endpoints | None = None
    deps: Dependencies | None = None
    sfn: LocalStepFunctions | None = None
    _threads: list[Any] = field(default_factory=list)
    _api: Any = None
    _kept: KeptBucket | None = None
    restored_objects: int = 0
    compact_function: LambdaFunction | None = None
    scheduled_sequels: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> LocalStack:
        o = self.options
        # The local runner calls handlers that emit no metric on some paths; that is fine here.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        try:
            data_dir = o.data_dir.resolve()
            if o.persist:
                data_dir.mkdir(parents=True, exist_ok=True)
                self.pg = PostgresServer(base_dir=catalog_dir(data_dir), port=o.pg_port).start()
            else:
                self.pg = PostgresServer(port=o.pg_port).start()
            self.aws = LocalAws(port=o.aws_port).start()
            database_url = self.pg.url
            migrate(database_url)  # applies only what a kept catalog does not have yet
            self._create_aws_resources()
            if o.persist:
                self._kept = KeptBucket(data_dir / "s3", self._bucket)
                backend = moto_s3_backend()
                self.restored_objects = self._kept.restore(backend)
                self._kept.install(backend)
            self._wire(database_url)
            if o.serve_api:
                self._start_api()
            self._start_pollers()
            if o.run_daily_schedule:
                sched = DailySchedule(self.run_scheduled)
                sched.start()
                self._threads.append(sched)
        except BaseException:
            self.stop()
            raise
        return self

    def _create_aws_resources(self) -> None:
        assert self.aws is not None
        o = self.options
        region = self.aws.region
        s3 = boto3.client("s3", endpoint_url=self.aws.endpoint_url, region_name=region)
        sqs = boto3.client("sqs", endpoint_url=self.aws.endpoint_url, region_name=region)
        self._bucket = bucket_name(o.stage)
        s3.create_bucket(Bucket=self._bucket)
        self._inventory_bucket = f"{self._bucket}-inventory"  # S3 Inventory's reports (local/inventory.py)
        s3.create_bucket(Bucket=self._inventory_bucket)
        dlq_url = sqs.create_queue(
            QueueName=dlq_name(o.stage), Attributes={"MessageRetentionPeriod": str(QUEUES.dlq_retention_days * 86400)}
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=queue_name(o.stage),
            Attributes={
                "VisibilityTimeout": str(QUEUES.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(QUEUES.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        self._scheduled_queue_url = sqs.create_queue(
            QueueName=scheduled_queue_name(o.stage),
            Attributes={
                "VisibilityTimeout": str(QUEUES.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(QUEUES.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        self._sqs, self._queue_url, self._dlq_url, self._dlq_arn = sqs, queue_url, dlq_url, dlq_arn
        self._queue_arn = self._arn(queue_url)
        # Presigned uploads: the bucket notifies (moto: a local queue; AWS: the register function),
        # and failed registrations go to the register-retry queue, which redrives to its own DLQ.
        retry_dlq_url = sqs.create_queue(
            QueueName=register_retry_dlq_name(o.stage), Attributes={"MessageRetentionPeriod": str(14 * 86400)}
        )["QueueUrl"]
        self._register_retry_url = sqs.create_queue(
            QueueName=register_retry_queue_name(o.stage),
            Attributes={
                "VisibilityTimeout": str(REGISTER.retry_visibility_seconds),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": self._arn(retry_dlq_url), "maxReceiveCount": str(REGISTER.retry_receives)}
                ),
            },
        )["QueueUrl"]
        self._s3_events_url = sqs.create_queue(QueueName=f"{o.stage}-kc-compaction-local-s3-events")["QueueUrl"]
        s3.put_bucket_notification_configuration(
            Bucket=self._bucket,
            NotificationConfiguration=notification_configuration(self._arn(self._s3_events_url), keys.STAGING_PREFIX),
        )

    def _arn(self, queue_url: str) -> str:
        attributes = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        return str(attributes["QueueArn"])

    def _wire(self, database_url: str) -> None:
        assert self.aws is not None
        o = self.options
        # A kept stack keeps its secrets too: tokens minted before a restart still work.
        previous = self._previous_endpoints() if o.persist else {}
        self._admin_token = previous.get("admin_token") or secrets.token_urlsafe(24)
        self._jwt_secret = previous.get("jwt_secret") or secrets.token_urlsafe(32)
        settings = Settings(
            stage=o.stage,
            region=self.aws.region,
            aws_endpoint_url=self.aws.endpoint_url,
            bucket=self._bucket,
            queue_url=self._queue_url,
            scheduled_queue_url=self._scheduled_queue_url,
            dlq_url=self._dlq_url,
            catalog_transport="postgres",
            database_url=database_url,
            jwt_secret=self._jwt_secret,
            admin_token=self._admin_token,
            supabase_url=None,
            jwt_issuer=LOCAL_JWT_ISSUER,  # the stack's own dev tokens (`fusou-compaction token`)
            target_file_size=o.target_file_size,
            lease_seconds=o.lease_seconds,
            grace_period_seconds=o.grace_period_seconds,
            scheduled_claim_limit=o.scheduled_claim_limit,
            scheduled_page_size=o.scheduled_page_size,
            register_retry_queue_url=self._register_retry_url,
            staging_min_age_seconds=o.staging_min_age_seconds,
            retry_backoff_base_seconds=o.retry_backoff_base_seconds,
            retry_backoff_max_seconds=o.retry_backoff_max_seconds,
            compaction_budget=o.compaction_budget,
            high_priority_reserve=o.high_priority_reserve,
            defer_base_seconds=o.defer_base_seconds,
            defer_max_seconds=o.defer_max_seconds,
            inventory_bucket=self._inventory_bucket,
        )
        catalog = Catalog(PostgresRpc(database_url, max_size=16))
        queue, dlq = SqsQueue(self._sqs, self._queue_url), SqsQueue(self._sqs, self._dlq_url, peek_for_age=True)
        # Compact's reserved concurrency is the budget: past it, Lambda.TooManyRequestsException.
        compact: Handler = STEP_HANDLERS["compact"]
        if o.compact_memory_mb is not None:
            self.compact_function = LambdaFunction(
                f"{step_handlers.__name__}.compact",
                function_name=f"{o.stage}-kc-compaction-step-compact",
                memory_mb=o.compact_memory_mb,
                timeout_seconds=COMPACT_LAMBDA.timeout_seconds,
                environment={**COMPACT_LAMBDA.environment, **settings_environment(settings)},
            )
            compact = self.compact_function
        self.compact_concurrency = ReservedConcurrency(compact, o.compaction_budget, name="step-compact")
        handlers: dict[str, Handler] = {**STEP_HANDLERS, "compact": self.compact_concurrency}
        # Reserved concurrency is carved out of the account's: Compact holds the budget, every other
        # step function shares what is left (AWS: the unreserved pool), and is throttled past it.
        self.account_concurrency = None
        if o.account_concurrency is not None:
            if o.account_concurrency <= o.compaction_budget:
                raise ValueError("account_concurrency must exceed compaction_budget (Compact's reserved share)")
            self.account_concurrency = AccountConcurrency(o.account_concurrency - o.compaction_budget)
            handlers = {
                name: h if name == "compact" else self.account_concurrency.wrap(h, name) for name, h in handlers.items()
            }
        store = S3ObjectStore(self._bucket, region=self.aws.region, endpoint_url=self.aws.endpoint_url)
        # The runner's own S3 access: the Compact Map's ItemReader and ResultWriter, as Step Functions'.
        runner = LocalRunner(
            build_pipeline(settings.map_max_concurrency), handlers, dlq, store=store, time_scale=o.step_time_scale
        )
        self.sfn = LocalStepFunctions(
            runner,
            # Step Functions runs every execution it starts; the budget bounds how many are started.
            max_workers=o.compaction_budget + 16,
            on_start=self._run_started if o.feed else None,
            on_end=self._run_ended if o.feed else None,
        )
        self.deps = Dependencies(
            settings=settings,
            catalog=catalog,
            store=store,
            queue=queue,
            dlq=dlq,
            orchestrator=self.sfn,
            alerts=LogAlerts(),
            register_retry=SqsQueue(self._sqs, self._register_retry_url),
            scheduled_queue=SqsQueue(self._sqs, self._scheduled_queue_url),
            invoker=LocalInvoker({"scheduled": self._scheduled_sequel}),
            inventory=S3InventoryReports(self._inventory_store(), inventory_report_prefix(self._bucket)),
        )
        use_dependencies(self.deps)

    def _start_api(self) -> None:
        from fusou_compaction.local.apigw import LocalApiGateway

        self._api = LocalApiGateway(port=self.options.api_port, feed=self.options.feed).start()

    def _run_started(self, ex: Execution) -> None:
        if self.options.feed is not None:
            message = (ex.input.get("execution") or {}).get("message") or {}
            self.options.feed(f"run {short(message.get('datasetId', ex.name))}: started ({message.get('priority')})")

    def _run_ended(self, ex: Execution) -> None:
        if self.options.feed is not None:
            self.options.feed(run_summary(ex.name, ex.output, ex.status, (ex.finished or ex.started) - ex.started))

    def _observed(
        self, handler: Callable[[dict[str, Any], Any], Any], lines: Callable[[dict[str, Any], Any], list[str]]
    ) -> Callable[[dict[str, Any], Any], Any]:
        """The handler, with what it did shown on the console (when there is one)."""
        feed = self.options.feed
        if feed is None:
            return handler

        def observed(event: dict[str, Any], context: Any) -> Any:
            result = handler(event, context)
            for line in lines(event, result):
                feed(line)
            return result

        return observed

    def _start_pollers(self) -> None:
        assert self.aws is not None
        o = self.options
        consumer = QueuePoller(
            "consumer",
            SqsQueue(self._sqs, self._queue_url),
            consumer_handler.handler,
            batch_size=QUEUES.consumer_batch_size,
            window_seconds=o.consumer_window_seconds,
            retry_visibility_seconds=o.retry_visibility_seconds,
            region=self.aws.region,
            queue_arn=self._queue_arn,
        )
        dlq = QueuePoller(
            "dlq",
            SqsQueue(self._sqs, self._dlq_url),
            self._observed(
                dlq_handler.handler, lambda e, r: dlq_lines(e, r, max_receive_count=QUEUES.max_receive_count)
            ),
            batch_size=QUEUES.dlq_batch_size,
            window_seconds=o.dlq_window_seconds,
            retry_visibility_seconds=o.retry_visibility_seconds,
            region=self.aws.region,
            queue_arn=self._dlq_arn,
        )
        register_retry = QueuePoller(
            "register-retry",
            SqsQueue(self._sqs, self._register_retry_url),
            self._observed(register_handler.handler, register_lines),
            batch_size=1,
            window_seconds=0,
            retry_visibility_seconds=o.register_retry_visibility_seconds,
            region=self.aws.region,
            queue_arn=self._arn(self._register_retry_url),
        )
        s3_events = S3EventInvoker(
            SqsQueue(self._sqs, self._s3_events_url),
            self._observed(register_handler.handler, register_lines),
            SqsQueue(self._sqs, self._register_retry_url),
            retries=REGISTER.async_retries,
            retry_delay_seconds=o.register_async_retry_delay_seconds,
        )
        # The low-priority queue: the same consumer function, its own event source mapping.
        scheduled = QueuePoller(
            "consumer-scheduled",
            SqsQueue(self._sqs, self._scheduled_queue_url),
            consumer_handler.handler,
            batch_size=QUEUES.consumer_batch_size,
            window_seconds=o.consumer_window_seconds,
            retry_visibility_seconds=o.retry_visibility_seconds,
            region=self.aws.region,
            queue_arn=self._arn(self._scheduled_queue_url),
        )
        for t in (consumer, scheduled, dlq, register_retry, s3_events):
            t.start()
            self._threads.append(t)

    def _inventory_store(self) -> S3ObjectStore:
        assert self.aws is not None
        return S3ObjectStore(self._inventory_bucket, region=self.aws.region, endpoint_url=self.aws.endpoint_url)

    def publish_inventory(self) -> str:
        """S3 Inventory's daily delivery, which moto does not make: a report of the data bucket in
        S3's format, from a listing (the only listing of the whole bucket, and only here)."""
        assert self.deps is not None
        return publish_inventory_report(self.deps.store, self._inventory_store())

    def run_scheduled(self, *, timeout_seconds: int = 900) -> dict[str, Any]:
        self.publish_inventory()  # delivered overnight, before the 02:00 run
        context = LocalContext(function_name="scheduled", timeout_seconds=timeout_seconds)
        result: dict[str, Any] = scheduled_handler.handler(scheduled_event(), context)
        if self.options.feed is not None:
            self.options.feed(scheduled_line(result))
        return result

    def _scheduled_sequel(self, event: dict[str, Any]) -> None:
        """A continuation of the scheduled run (its asynchronous self-invocation)."""
        result = scheduled_handler.handler(event, LocalContext(function_name="scheduled"))
        self.scheduled_sequels.append(result)
        if self.options.feed is not None:
            self.options.feed(scheduled_line(result))

    def _previous_endpoints(self) -> dict[str, Any]:
        path = self.options.data_dir / "endpoints.json"
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def write_endpoints(self) -> Path:
        assert self.aws is not None and self.pg is not None
        self.endpoints = Endpoints(
            api_url=self._api.url if self._api else "",
            aws_endpoint_url=self.aws.endpoint_url,
            region=self.aws.region,
            bucket=self._bucket,
            queue_url=self._queue_url,
            dlq_url=self._dlq_url,
            database_url=self.pg.url,
            admin_token=self._admin_token,
            jwt_secret=self._jwt_secret,
        )
        path = self.options.data_dir / "endpoints.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # It holds the stack's admin token and signing secret: readable by its owner only, from the start.
        tmp = path.with_name(f".endpoints.{os.getpid()}.json")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.endpoints.to_json_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path.resolve()

    def stop(self) -> None:
        for t in self._threads:
            t.stop()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if self.sfn is not None:
            # Ctrl-C should not wait for runs in flight: their leases expire, as after a crash.
            self.sfn.shutdown(wait=False)
        if self.compact_function is not None:
            self.compact_function.close()  # a Compact in flight dies with it, as in a crash
        if self._api is not None:
            self._api.stop()
        if self.deps is not None:
            self.deps.catalog.close()
            use_dependencies(None)
        if self._kept is not None:
            self._kept.uninstall()
            self._kept = None
        if self.aws is not None:
            self.aws.stop()
        if self.pg is not None:
            self.pg.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
