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


def queue_name(stage: str) -> str:
    return f"{stage}-kc-compaction-queue"


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
