"""DLQ records state the receive count that moved the message: the queue's maxReceiveCount (3),
not the DLQ's own ApproximateReceiveCount, which carries the source queue's receives plus its own."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from fusou_compaction.handlers import dlq
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.local.stack import LocalStack

from ..conftest import load_event
from .conftest import wait_for
from .test_local_stack import sqs


def test_a_poison_message_is_recorded_as_moved_after_the_three_receives_it_had(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    seen: list[str] = []
    poller = next(t for t in stack._threads if t.name == "consumer")
    original = poller.handler

    def counting(event: dict[str, Any], context: Any) -> Any:
        seen.extend(r["body"] for r in event["Records"])
        return original(event, context)

    # Given a body the consumer can never take, sent to the queue
    poller.handler = counting
    try:
        body = f'{{"datasetId": "not-a-uuid-{uuid4()}"}}'
        sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=body)
        # When the queue moves it to the DLQ and the DLQ function records it
        failure = wait_for(
            lambda: next((f for f in deps.catalog.list_recent_failures(50) if f.body == body), None), timeout=60
        )
    finally:
        poller.handler = original
    # Then the record names the three receives the consumer really had
    assert seen.count(body) == 3
    assert failure.error.endswith("after 3 receives"), failure.error


@pytest.mark.parametrize(
    ("dlq_receive_count", "source_arn", "says"),
    [
        ("4", None, "after 3 receives"),  # the DLQ's first receive of a message the queue moved
        ("6", None, "after 3 receives"),  # the DLQ function itself was retried twice
        ("1", "arn:aws:sqs:us-east-1:123456789012:dev-kc-compaction-queue", "after 3 receives"),
        ("1", None, None),  # sent to the DLQ directly: no receive count to state
    ],
)
def test_the_dlq_record_states_the_count_that_moved_the_message(
    stack: LocalStack, dlq_receive_count: str, source_arn: str | None, says: str | None
) -> None:
    deps = stack.deps
    assert deps is not None
    # Given the sample DLQ batch's message the consumer never took, as the DLQ delivers it
    event = load_event("sqs_dlq_batch.json")
    record = event["Records"][1]
    body = f"{{not json {uuid4()}"
    record.update(body=body, messageId=str(uuid4()))
    record["attributes"]["ApproximateReceiveCount"] = dlq_receive_count
    if source_arn:
        record["attributes"]["DeadLetterQueueSourceArn"] = source_arn
    event["Records"] = [record]
    # When the DLQ function handles it
    assert dlq.handler(event, LocalContext("dlq")) == {"batchItemFailures": []}
    # Then the record states the queue's count, or none
    [failure] = [f for f in deps.catalog.list_recent_failures(100) if f.body == body]
    if says:
        assert failure.error.endswith(says), failure.error
    else:
        assert "receives" not in failure.error, failure.error
