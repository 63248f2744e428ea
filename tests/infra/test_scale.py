"""Scale (issue 19): the low-priority queue, the global budget, throttle retries, the drain's continuation."""

from __future__ import annotations

import json
from typing import Any

from fusou_compaction.pipeline.definition import THROTTLE_ERRORS
from fusou_compaction.settings import Settings
from fusou_compaction.topology import QUEUES
from fusou_infra import config
from tests.infra.cfn import join_strings
from tests.infra.conftest import Synthesized

BUDGET = Settings.model_fields["compaction_budget"].default


def _queue_id(synth: Synthesized, name: str) -> str:
    [lid] = [lid for lid, r in synth.of_type("AWS::SQS::Queue").items() if r["Properties"]["QueueName"] == name]
    return lid


def _lambda_tasks(states: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, st in states.items():
        if st["Type"] == "Map":
            out += _lambda_tasks(st["ItemProcessor"]["States"])
        elif st["Type"] == "Task" and not str(st["Resource"]).startswith("arn:aws:states:::"):
            out.append((name, st))
    return out


def test_the_scheduled_queue_redrives_to_the_same_dlq_after_three_receives(synth: Synthesized) -> None:
    dlq = _queue_id(synth, "dev-kc-compaction-dlq")
    props = synth.props(_queue_id(synth, "dev-kc-compaction-scheduled-queue"))
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 3}
    assert props["VisibilityTimeout"] >= 6 * QUEUES.consumer_timeout_seconds and props["SqsManagedSseEnabled"]


def test_the_consumer_drains_both_queues_each_with_a_bounded_maximum_concurrency(synth: Synthesized) -> None:
    consumer = synth.logical_id(synth.stack.pipeline.consumer)
    mappings = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": consumer}
    }
    main, low = _queue_id(synth, "dev-kc-compaction-queue"), _queue_id(synth, "dev-kc-compaction-scheduled-queue")
    assert set(mappings) == {main, low}
    for lid, concurrency in ((main, QUEUES.consumer_max_concurrency), (low, QUEUES.scheduled_consumer_max_concurrency)):
        m = mappings[lid]
        assert m["BatchSize"] == 10 and m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["ScalingConfig"] == {"MaximumConcurrency": concurrency}


def test_compacts_reserved_concurrency_is_the_budget_the_consumer_admits_runs_against(synth: Synthesized) -> None:
    compact = synth.function("step-compact")
    assert compact["ReservedConcurrentExecutions"] == BUDGET == config.DEFAULT_COMPACTION_BUDGET
    env = synth.function("consumer")["Environment"]["Variables"]
    assert env["FUSOU_COMPACTION_BUDGET"] == str(BUDGET)
    assert env["FUSOU_MAP_MAX_CONCURRENCY"] == str(config.DEFAULT_MAP_MAX_CONCURRENCY)
    assert "FUSOU_SCHEDULED_QUEUE_URL" in env
    # And no other function reserves concurrency (the account's unreserved pool stays large)
    reserved = [
        r["Properties"]["FunctionName"]
        for r in synth.of_type("AWS::Lambda::Function").values()
        if "ReservedConcurrentExecutions" in r["Properties"]
    ]
    assert reserved == ["dev-kc-compaction-step-compact"]


def test_every_lambda_task_first_waits_out_throttling_with_full_jitter(synth: Synthesized) -> None:
    sm = synth.props(synth.logical_id(synth.stack.pipeline.state_machine))
    asl = json.loads(join_strings(sm["DefinitionString"]))
    tasks = _lambda_tasks(asl["States"])
    assert {name for name, _ in tasks} == {"Validate", "GetMetadata", "CompactBin", "Update", "RecordFailure"}
    for name, st in tasks:
        first = st["Retry"][0]
        assert first["ErrorEquals"] == list(THROTTLE_ERRORS), name
        assert "Lambda.TooManyRequestsException" in first["ErrorEquals"]
        assert first["JitterStrategy"] == "FULL" and first["MaxAttempts"] >= 10 and first["MaxDelaySeconds"] >= 60
        # And the throttle errors are not also in a later retrier (the first match decides in ASL)
        for later in st["Retry"][1:]:
            assert not set(later["ErrorEquals"]) & set(THROTTLE_ERRORS), name


def test_the_scheduled_function_may_invoke_itself_to_continue_a_drain(synth: Synthesized) -> None:
    fn = synth.function("scheduled")
    assert fn["Timeout"] == 900
    role = fn["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    invoke = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert len(invoke) == 1
    assert join_strings(invoke[0]["Resource"]).endswith(":function:dev-kc-compaction-scheduled")
    sends = [
        join_strings(r)
        for s in statements
        if "sqs:SendMessage" in s["Action"]
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert f"<{_queue_id(synth, 'dev-kc-compaction-scheduled-queue')}>" in sends, sends
