"""Alarms to an encrypted SNS topic, and the dashboard's widgets."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.cfn import join_strings
from tests.infra.conftest import Synthesized


def _alarms(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["AlarmName"]: r["Properties"] for r in synth.of_type("AWS::CloudWatch::Alarm").values()}


def test_required_alarms_watch_the_right_metrics(synth: Synthesized) -> None:
    alarms = _alarms(synth)
    dlq = alarms["dev-kc-compaction-dlq-not-empty"]
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dlq["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [synth.logical_id(synth.stack.queues.dlq), "QueueName"]}}
    ]
    assert dlq["Threshold"] == 1 and dlq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    age = alarms["dev-kc-compaction-queue-age"]
    assert (age["Namespace"], age["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert age["Dimensions"][0]["Value"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.queues.queue), "QueueName"]}

    failed = alarms["dev-kc-compaction-failed-executions"]
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/States", "ExecutionsFailed")
    assert failed["Dimensions"] == [
        {"Name": "StateMachineArn", "Value": {"Ref": synth.logical_id(synth.stack.pipeline.state_machine)}}
    ]

    api = alarms["dev-kc-compaction-api-5xx"]
    assert (api["Namespace"], api["MetricName"]) == ("AWS/ApiGateway", "5XXError")

    recorded = alarms["dev-kc-compaction-dlq-received"]
    assert (recorded["Namespace"], recorded["MetricName"]) == ("FUSOU/Compaction", "DlqMessages")


def test_every_alarm_notifies_the_alerts_topic(synth: Synthesized) -> None:
    topic = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    for name, alarm in _alarms(synth).items():
        assert alarm["AlarmActions"] == [topic], name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_alerts_topic_is_encrypted_with_a_key_cloudwatch_may_use(synth: Synthesized) -> None:
    key_id = synth.logical_id(synth.stack.monitoring.key)
    topic = synth.props(synth.logical_id(synth.stack.monitoring.topic))
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = synth.props(key_id)
    assert key["EnableKeyRotation"] is True
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key["KeyPolicy"]["Statement"])


def _dashboard(synth: Synthesized) -> dict[str, Any]:
    [props] = [r["Properties"] for r in synth.of_type("AWS::CloudWatch::Dashboard").values()]
    assert props["DashboardName"] == "dev-kc-compaction-overview"
    return json.loads(join_strings(props["DashboardBody"]))  # type: ignore[no-any-return]


def test_dashboard_has_the_listed_widgets(synth: Synthesized) -> None:
    body = _dashboard(synth)
    titles = {w["properties"].get("title") for w in body["widgets"]}
    assert {
        "Queue depth",
        "Queue oldest message age (s)",
        "DLQ depth",
        "Executions",
        "Step durations (p90, ms)",
        "Bytes compacted",
        "Files compacted",
        "API 4xx / 5xx",
        "API latency (ms)",
        "Lambda errors",
        "Lambda throttles",
    } <= titles


def test_dashboard_plots_the_metrics_the_functions_emit(synth: Synthesized) -> None:
    body = json.dumps(_dashboard(synth))
    for metric in (
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "BytesCompacted",
        "FilesCompacted",
        "4XXError",
        "5XXError",
        "Latency",
        "Throttles",
        "Errors",
        "Duration",
    ):
        assert f'"{metric}"' in body, metric
