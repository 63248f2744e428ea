"""The compaction queue and its DLQ (names and settings from fusou_compaction.topology), and the
register function's retry queue (presigned uploads whose registration failed) with its DLQ."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fusou_compaction.topology import (
    QUEUES,
    dlq_name,
    queue_name,
    register_retry_dlq_name,
    register_retry_queue_name,
    scheduled_queue_name,
)
from fusou_infra import config


class Queues(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: str) -> None:
        super().__init__(scope, id)
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            queue_name=dlq_name(stage),
            retention_period=Duration.days(QUEUES.dlq_retention_days),
            # The DLQ function's event source needs visibility >= its timeout; 6x as for the main queue.
            visibility_timeout=Duration.seconds(6 * config.DLQ_HANDLER_TIMEOUT_SECONDS),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name(stage),
            visibility_timeout=Duration.seconds(QUEUES.visibility_timeout_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=QUEUES.max_receive_count),
        )
        # The low-priority queue: only the scheduled run feeds it, and the consumer admits its
        # messages only up to the budget minus what is reserved for manual and realtime work.
        # Same redrive as the main queue (waiting for the budget never counts as a receive).
        self.scheduled_queue = sqs.Queue(
            self,
            "ScheduledQueue",
            queue_name=scheduled_queue_name(stage),
            visibility_timeout=Duration.seconds(QUEUES.visibility_timeout_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=QUEUES.max_receive_count),
        )
        # Staged uploads whose registration failed after Lambda's asynchronous retries (the
        # register function's on-failure destination). The register function consumes this queue
        # itself: a record that still fails comes back after the visibility timeout, every 30 min
        # for a day (the staging prefix keeps objects 2 days), then waits on the DLQ (alarmed).
        self.register_retry_dlq = sqs.Queue(
            self,
            "RegisterRetryDlq",
            queue_name=register_retry_dlq_name(stage),
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.register_retry = sqs.Queue(
            self,
            "RegisterRetry",
            queue_name=register_retry_queue_name(stage),
            visibility_timeout=Duration.seconds(config.REGISTER_RETRY_VISIBILITY_SECONDS),
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.register_retry_dlq, max_receive_count=config.REGISTER_RETRY_RECEIVES
            ),
        )
