"""Names and settings of the deployed resources, in one place: CDK and the local stack read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueTopology:
    consumer_batch_size: int = 10
    consumer_batching_window_seconds: int = 30
    consumer_timeout_seconds: int = 60
    max_receive_count: int = 3
    dlq_batch_size: int = 5
    dlq_batching_window_seconds: int = 60
    dlq_retention_days: int = 14
    # Event source maximum concurrency (SQS ScalingConfig, 2-1000): the consumer only admits runs
    # and starts executions, so a few concurrent batches keep up with any budget; the bound keeps
    # the churn of deferred messages (and StartExecution's rate) small whatever the backlog.
    consumer_max_concurrency: int = 5
    scheduled_consumer_max_concurrency: int = 2

    @property
    def visibility_timeout_seconds(self) -> int:
        # AWS's rule for SQS event sources: at least 6x the function's timeout.
        return 6 * self.consumer_timeout_seconds


QUEUES = QueueTopology()


@dataclass(frozen=True)
class RegisterTopology:
    """Presigned uploads: S3's event invokes the register function asynchronously; Lambda retries
    it twice, then sends it to the register-retry queue, which the function drains every 30 min
    for a day (well within the staging prefix's 2-day expiry), then to that queue's DLQ."""

    async_retries: int = 2
    retry_visibility_seconds: int = 1800  # >= 6x the register function's timeout
    retry_receives: int = 48
    staging_expire_days: int = 2


REGISTER = RegisterTopology()
SCHEDULE_CRON = "cron(0 2 * * ? *)"  # every day at 02:00 UTC


@dataclass(frozen=True)
class InventoryTopology:
    """The data bucket's S3 Inventory: every day, a CSV list of its current objects (key, size, last
    modified, ETag) delivered to a bucket of its own, under <prefix>/<data bucket>/<id>/. The
    scheduled run's inventory sweep reads the newest report instead of listing the bucket."""

    prefix: str = "inventory"
    id: str = "orphan-sweep"
    optional_fields: tuple[str, ...] = ("Size", "LastModifiedDate", "ETag")
    expire_days: int = 14  # reports kept this long: a sweep spread over several days still finds its own


INVENTORY = InventoryTopology()


def inventory_report_prefix(data_bucket: str) -> str:
    """Where S3 delivers the data bucket's reports, in the inventory bucket."""
    return f"{INVENTORY.prefix}/{data_bucket}/{INVENTORY.id}/"


def queue_name(stage: str) -> str:
    return f"{stage}-kc-compaction-queue"


def scheduled_queue_name(stage: str) -> str:
    """The low-priority queue: only the scheduled run feeds it; the consumer drains it after the
    main queue's manual and realtime messages have taken what they need of the budget."""
    return f"{stage}-kc-compaction-scheduled-queue"


def dlq_name(stage: str) -> str:
    return f"{stage}-kc-compaction-dlq"


def register_retry_queue_name(stage: str) -> str:
    return f"{stage}-kc-compaction-register-retry"


def register_retry_dlq_name(stage: str) -> str:
    return f"{stage}-kc-compaction-register-retry-dlq"


def bucket_name(stage: str, account: str = "local") -> str:
    return f"{stage}-kc-compaction-{account}"


def state_machine_name(stage: str) -> str:
    return f"{stage}-kc-compaction"


@dataclass(frozen=True)
class LambdaShape:
    """What a function is given in AWS beyond its code: memory, timeout, environment."""

    memory_mb: int
    timeout_seconds: int
    environment: dict[str, str]


# The Compact function as deployed (infra: config.COMPACT_MEMORY_MB, the pipeline's Compact timeout
# and its environment; tests/infra checks the synthesized template agrees). The local stack runs
# each Compact invocation in a process held to this memory and timeout (local/lambda_process.py).
# Arrow's system allocator returns memory between bins; it must be set before pyarrow loads.
COMPACT_LAMBDA = LambdaShape(memory_mb=1769, timeout_seconds=900, environment={"ARROW_DEFAULT_MEMORY_POOL": "system"})
