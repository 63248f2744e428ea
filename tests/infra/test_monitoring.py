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


def test_cloudwatch_may_publish_to_the_alerts_topic_and_plain_http_may_not(synth: Synthesized) -> None:
    # enforce_ssl replaces SNS's default policy: without an Allow for CloudWatch, alarms reach nobody.
    topic = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.of_type("AWS::SNS::TopicPolicy").values()
        if topic in p["Properties"]["Topics"]
    ]
    allow = [s for s in policy if s["Effect"] == "Allow"]
    assert allow == [
        {
            "Sid": "AllowCloudWatchAlarms",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic,
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        }
    ]
    [deny] = [s for s in policy if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] in ("*", {"AWS": "*"}) and "sns:Publish" in deny["Action"]
    key = synth.props(synth.logical_id(synth.stack.monitoring.key))
    [cw_key] = [
        s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cw_key["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_custom_metric_alarms_watch_their_own_stage(synth: Synthesized) -> None:
    for name, alarm in _alarms(synth).items():
        if alarm.get("Namespace") == "FUSOU/Compaction":
            assert sorted(alarm["Dimensions"], key=lambda d: d["Name"]) == [
                {"Name": "service", "Value": "fusou-compaction"},
                {"Name": "stage", "Value": "dev"},
            ], name


def test_the_functions_metrics_carry_the_stage_dimension() -> None:
    from fusou_compaction.observability import metrics

    assert metrics.default_dimensions == {"stage": "dev"}


def test_lost_records_and_registrations_are_alarmed(synth: Synthesized) -> None:
    alarms = _alarms(synth)
    record_errors = alarms["dev-kc-compaction-dlq-record-errors"]
    assert (record_errors["Namespace"], record_errors["MetricName"]) == ("FUSOU/Compaction", "DlqRecordErrors")
    assert record_errors["Threshold"] == 1
    register_errors = alarms["dev-kc-compaction-register-errors"]
    assert (register_errors["Namespace"], register_errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert register_errors["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": synth.logical_id(synth.stack.api.register)}}
    ]
    exhausted = alarms["dev-kc-compaction-register-retry-exhausted"]
    assert exhausted["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert exhausted["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.queues.register_retry_dlq), "QueueName"]
    }


def test_a_failed_registration_goes_to_a_retry_queue_the_register_function_drains(synth: Synthesized) -> None:
    register = synth.logical_id(synth.stack.api.register)
    retry = synth.logical_id(synth.stack.queues.register_retry)
    [invoke_config] = [
        r["Properties"]
        for r in synth.of_type("AWS::Lambda::EventInvokeConfig").values()
        if r["Properties"]["FunctionName"] == {"Ref": register}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 2
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [retry, "Arn"]}
    [mapping] = [
        r["Properties"]
        for r in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [retry, "Arn"]}
    ]
    assert mapping["FunctionName"] == {"Ref": register}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = synth.props(retry)
    timeout = synth.function("register")["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.queues.register_retry_dlq), "Arn"]
    }
    # Retried for at most a day: the staged object (2-day expiry) is still there for the last try.
    assert queue["VisibilityTimeout"] * redrive["maxReceiveCount"] <= 24 * 3600


def test_the_alerts_key_goes_with_the_stack(synth: Synthesized) -> None:
    key = synth.resources[synth.logical_id(synth.stack.monitoring.key)]
    assert key["DeletionPolicy"] == "Delete" and key["Properties"]["PendingWindowInDays"] == 7
