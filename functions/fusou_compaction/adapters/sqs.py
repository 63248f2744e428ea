"""SQS adapter of the Queue port (AWS, or moto's server locally)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fusou_compaction.ports.messaging import BatchEntry, BatchSendResult, QueueDepth, QueueError, ReceivedMessage

SEND_BATCH_LIMIT = 10  # SQS's hard limit per SendMessageBatch
# A page of 1,000 claims is 100 SendMessageBatch calls: sent 8 at a time (~20 ms each in AWS),
# a page takes ~0.3 s instead of ~2 s, so 100,000 datasets are enqueued in well under a minute.
SEND_BATCH_THREADS = 8


class SqsQueue:
    def __init__(self, client: Any, url: str, *, cloudwatch: Any = None, peek_for_age: bool = False) -> None:
        self._sqs = client
        self.url = url
        self._cloudwatch = cloudwatch
        # Peeking (a receive with visibility 0) counts as a receive: on a queue with a redrive
        # policy, status polls would push waiting messages into the DLQ. Only the DLQ may be peeked.
        self._peek_for_age = peek_for_age

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        kwargs: dict[str, Any] = {"DelaySeconds": delay_seconds} if delay_seconds else {}
        try:
            return str(self._sqs.send_message(QueueUrl=self.url, MessageBody=body, **kwargs)["MessageId"])
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"send to {self.url} failed: {exc}") from exc

    def _send_chunk(self, chunk: list[BatchEntry]) -> BatchSendResult:
        try:
            resp = self._sqs.send_message_batch(
                QueueUrl=self.url, Entries=[{"Id": e.id, "MessageBody": e.body} for e in chunk]
            )
        except (ClientError, BotoCoreError) as exc:
            return BatchSendResult(sent=[], failed={e.id: str(exc) for e in chunk})
        return BatchSendResult(
            sent=[s["Id"] for s in resp.get("Successful", [])],
            failed={f["Id"]: f.get("Message") or f.get("Code", "failed") for f in resp.get("Failed", [])},
        )

    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult:
        chunks = [entries[i : i + SEND_BATCH_LIMIT] for i in range(0, len(entries), SEND_BATCH_LIMIT)]
        if len(chunks) <= 1:
            results = [self._send_chunk(c) for c in chunks]
        else:
            with ThreadPoolExecutor(min(SEND_BATCH_THREADS, len(chunks)), thread_name_prefix="sqs-send") as pool:
                results = list(pool.map(self._send_chunk, chunks))
        sent: list[str] = []
        failed: dict[str, str] = {}
        for r in results:
            sent.extend(r.sent)
            failed.update(r.failed)
        return BatchSendResult(sent=sent, failed=failed)

    def receive(
        self, max_messages: int, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max(1, min(max_messages, 10)),
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        resp = self._sqs.receive_message(**kwargs)
        return [
            ReceivedMessage(m["MessageId"], m["ReceiptHandle"], m["Body"], dict(m.get("Attributes", {})))
            for m in resp.get("Messages", [])
        ]

    def delete(self, receipt_handle: str) -> None:
        self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def depth(self) -> QueueDepth:
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        visible = int(attrs.get("ApproximateNumberOfMessages", 0))
        in_flight = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        return QueueDepth(visible=visible, in_flight=in_flight, oldest_age_seconds=self._oldest_age(visible))

    def _oldest_age(self, visible: int) -> int | None:
        if visible == 0:
            return None
        if self._peek_for_age:
            return self._peeked_age()
        return self._metric_age()

    def _peeked_age(self) -> int | None:
        try:
            msgs = self.receive(10, visibility_timeout=0)
        except (ClientError, BotoCoreError):
            return None
        stamps = [int(m.attributes["SentTimestamp"]) for m in msgs if "SentTimestamp" in m.attributes]
        return int(time.time() - min(stamps) / 1000) if stamps else None

    def _metric_age(self) -> int | None:
        """SQS publishes the oldest message's age only to CloudWatch (absent locally: None)."""
        if self._cloudwatch is None:
            return None
        now = datetime.now(UTC)
        try:
            points = self._cloudwatch.get_metric_statistics(
                Namespace="AWS/SQS",
                MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=[{"Name": "QueueName", "Value": self.url.rsplit("/", 1)[-1]}],
                StartTime=now - timedelta(minutes=10),
                EndTime=now,
                Period=60,
                Statistics=["Maximum"],
            )["Datapoints"]
        except (ClientError, BotoCoreError):
            return None
        if not points:
            return None
        return int(max(points, key=lambda p: p["Timestamp"])["Maximum"])
