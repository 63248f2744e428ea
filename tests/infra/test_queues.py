"""Queues: names, redrive, visibility, encryption, retention, and the two event source mappings."""

from __future__ import annotations

from aws_cdk.assertions import Match

from fusou_compaction.topology import QUEUES
from tests.infra.conftest import Synthesized


def _queue(synth: Synthesized, name: str) -> tuple[str, dict]:
    [(lid, res)] = [
        (lid, r) for lid, r in synth.of_type("AWS::SQS::Queue").items() if r["Properties"]["QueueName"] == name
    ]
    return lid, res["Properties"]


def test_queue_redrives_to_the_dlq_after_three_receives(synth: Synthesized) -> None:
    # Given the synthesized queues
    dlq_id, _ = _queue(synth, "dev-kc-compaction-dlq")
    _, queue = _queue(synth, "dev-kc-compaction-queue")
    # Then the main queue sends a message to the DLQ after its third receive
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 3}


def test_queue_visibility_is_at_least_six_times_the_consumer_timeout(synth: Synthesized) -> None:
    _, queue = _queue(synth, "dev-kc-compaction-queue")
    consumer = synth.function("consumer")
    assert consumer["Timeout"] == QUEUES.consumer_timeout_seconds
    assert queue["VisibilityTimeout"] >= 6 * consumer["Timeout"]


def test_dlq_keeps_messages_14_days_and_outlasts_its_handler(synth: Synthesized) -> None:
    _, dlq = _queue(synth, "dev-kc-compaction-dlq")
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["VisibilityTimeout"] >= synth.function("dlq")["Timeout"]


def test_both_queues_use_sqs_managed_encryption_and_refuse_plain_http(synth: Synthesized, template) -> None:
    for name in ("dev-kc-compaction-queue", "dev-kc-compaction-dlq"):
        lid, props = _queue(synth, name)
        assert props["SqsManagedSseEnabled"] is True
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": lid}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def _mapping_for(synth: Synthesized, queue_name: str) -> dict:
    lid, _ = _queue(synth, queue_name)
    [mapping] = [
        r["Properties"]
        for r in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [lid, "Arn"]}
    ]
    return mapping


def test_consumer_takes_batches_of_10_within_30s_and_reports_partial_failures(synth: Synthesized) -> None:
    mapping = _mapping_for(synth, "dev-kc-compaction-queue")
    consumer_id = synth.logical_id(synth.stack.pipeline.consumer)
    assert mapping["FunctionName"] == {"Ref": consumer_id}
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == 30
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_dlq_handler_takes_batches_of_5_within_60s(synth: Synthesized) -> None:
    mapping = _mapping_for(synth, "dev-kc-compaction-dlq")
    assert mapping["FunctionName"] == {"Ref": synth.logical_id(synth.stack.pipeline.dlq_handler)}
    assert mapping["BatchSize"] == 5
    assert mapping["MaximumBatchingWindowInSeconds"] == 60
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
