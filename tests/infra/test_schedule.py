"""EventBridge: every day at 02:00 UTC, the scheduled function."""

from __future__ import annotations

import json

from tests.infra.conftest import Synthesized


def test_daily_rule_runs_the_scheduled_function_at_0200_utc(synth: Synthesized) -> None:
    rule = synth.props(synth.logical_id(synth.stack.schedule.rule))
    assert rule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.schedule.function), "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2


def test_scheduled_function_runs_the_scheduled_handler(synth: Synthesized) -> None:
    fn = synth.function("scheduled")
    assert fn["Handler"] == "fusou_compaction.handlers.scheduled.handler"
    assert fn["Environment"]["Variables"]["FUSOU_QUEUE_URL"] == {"Ref": synth.logical_id(synth.stack.queues.queue)}


def test_scheduled_function_may_hand_stranded_uploads_to_the_register_retry_queue(synth: Synthesized) -> None:
    # The daily run re-sends presigned uploads whose S3 event was lost to the register function's retry queue
    fn = synth.function("scheduled")
    retry_id = synth.logical_id(synth.stack.queues.register_retry)
    assert fn["Environment"]["Variables"]["FUSOU_REGISTER_RETRY_QUEUE_URL"] == {"Ref": retry_id}
    role_id = fn["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    retry_arn = {"Fn::GetAtt": [retry_id, "Arn"]}
    assert any(
        "sqs:SendMessage" in s["Action"]
        and retry_arn in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        for s in statements
    )
    # and it does not read or write any staged object itself: the register function does
    assert not any("staging/" in json.dumps(s["Resource"]) for s in statements)
