"""EventBridge: every day at 02:00 UTC, the scheduled function."""

from __future__ import annotations

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
