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
SCHEDULE_CRON = "cron(0 2 * * ? *)"  # every day at 02:00 UTC


def queue_name(stage: str) -> str:
    return f"{stage}-kc-compaction-queue"


def dlq_name(stage: str) -> str:
    return f"{stage}-kc-compaction-dlq"


def bucket_name(stage: str, account: str = "local") -> str:
    return f"{stage}-kc-compaction-{account}"


def state_machine_name(stage: str) -> str:
    return f"{stage}-kc-compaction"
