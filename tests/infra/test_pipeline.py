"""The state machine: built from the one pipeline definition, the same one the local runner executes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fusou_compaction.pipeline.definition import TRANSIENT_ERRORS, build_pipeline, to_asl
from tests.infra.cfn import join_strings
from tests.infra.conftest import Synthesized

STEP_KEYS = ("validate", "get_metadata", "compact", "update", "record_failure")
ASL_VALIDATOR = "4.0.0"  # the version checked against this definition (offline, from the npm cache)


def _state_machine(synth: Synthesized) -> dict[str, Any]:
    return synth.props(synth.logical_id(synth.stack.pipeline.state_machine))


@pytest.fixture(scope="module")
def asl(synth: Synthesized) -> dict[str, Any]:
    """The synthesized definition, with each reference written as <LogicalId>."""
    return json.loads(join_strings(_state_machine(synth)["DefinitionString"]))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def step_ids(synth: Synthesized) -> dict[str, str]:
    """Pipeline function key -> logical id, found by each function's handler in the template."""
    out = {}
    for lid, res in synth.of_type("AWS::Lambda::Function").items():
        handler = res["Properties"]["Handler"]
        if handler.startswith("fusou_compaction.handlers.steps."):
            out[handler.rsplit(".", 1)[1]] = lid
    assert sorted(out) == sorted(STEP_KEYS)
    return out


def test_synthesized_state_machine_equals_the_local_runners_definition(
    synth: Synthesized, asl: dict[str, Any], step_ids: dict[str, str]
) -> None:
    # Given the definition the local runner executes (fusou_compaction.local.stack: build_pipeline())
    runner_pipeline = build_pipeline()
    dlq_id = synth.logical_id(synth.stack.queues.dlq)
    bucket_id = synth.logical_id(synth.stack.storage.bucket)
    # When it is rendered with the same function references as the synthesized one
    expected = to_asl(runner_pipeline, {k: f"<{lid}>" for k, lid in step_ids.items()}, f"<{dlq_id}>", f"<{bucket_id}>")
    # Then both are the same document: states, order, retries, catches, timeouts, map settings
    assert asl == expected
    assert list(asl["States"])[: len(runner_pipeline.order())] == runner_pipeline.order()


def test_main_path_is_validate_getmetadata_compact_update(asl: dict[str, Any], step_ids: dict[str, str]) -> None:
    states = asl["States"]
    assert asl["StartAt"] == "Validate"
    assert states["Validate"]["Resource"] == f"<{step_ids['validate']}>"
    assert states["Validate"]["Next"] == "ShouldCompact"
    assert states["ShouldCompact"]["Default"] == "GetMetadata"
    assert states["GetMetadata"]["Next"] == "Compact"
    assert states["Compact"]["Type"] == "Map" and states["Compact"]["Next"] == "Update"
    assert states["Update"]["Next"] == "Done"
    assert states["Done"] == {"Type": "Succeed"} and states["Skipped"] == {"Type": "Succeed"}


def test_compact_is_a_bounded_distributed_map_reading_the_plan_from_s3_and_writing_results_to_s3(
    synth: Synthesized, asl: dict[str, Any], step_ids: dict[str, str]
) -> None:
    compact = asl["States"]["Compact"]
    bucket = f"<{synth.logical_id(synth.stack.storage.bucket)}>"
    # The items are the plan's file in the data bucket, never the state (issue 19, item 4)
    assert "ItemsPath" not in compact
    assert compact["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": bucket, "Key.$": "$.plan.itemsKey"},
    }
    # Each bin is a child execution with a history of its own; STANDARD, so a bin's retries may
    # outlast an EXPRESS child's 5 minutes; any failed bin fails the Map, as the INLINE Map did
    assert compact["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert compact["ToleratedFailurePercentage"] == 0
    # The results go to the run's prefix in S3; the state gets only where they are
    assert compact["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": bucket, "Prefix.$": "$.plan.resultsPrefix"},
    }
    assert compact["ResultPath"] == "$.compact"
    assert 1 <= compact["MaxConcurrency"] <= 40
    inner = compact["ItemProcessor"]["States"]["CompactBin"]
    assert inner["Resource"] == f"<{step_ids['compact']}>"
    assert inner["TimeoutSeconds"] == 900


def test_the_synthesized_definition_is_valid_amazon_states_language(synth: Synthesized, tmp_path: Path) -> None:
    # asl-validator (npm) checks the ASL schema, Distributed Map fields included, offline
    if shutil.which("npx") is None:
        pytest.skip("npx (node) is not installed: asl-validator cannot run")
    text = json.dumps(json.loads(join_strings(_state_machine(synth)["DefinitionString"])))
    # References become valid ARNs (Lambda) or plain names (bucket, queue URL) for the validator
    text = re.sub(
        r'"Resource": "<[A-Za-z0-9]+>"', '"Resource": "arn:aws:lambda:us-east-1:123456789012:function:f"', text
    )
    path = tmp_path / "sm.json"
    path.write_text(re.sub(r"<[A-Za-z0-9:]+>", "placeholder", text))

    def validate(*mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["npx", *mode, "--yes", f"asl-validator@{ASL_VALIDATOR}", "--json-path", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    # From the npm cache when it is there; otherwise from the registry (this machine reaches npm),
    # never a skip: a fresh CI clone has an empty cache.
    run = validate("--offline")
    if run.returncode != 0 and "ENOTCACHED" in run.stderr:
        run = validate()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "is valid" in run.stdout


@pytest.mark.parametrize("state", ["Validate", "GetMetadata", "Update"])
def test_steps_retry_transient_errors_with_backoff_and_jitter_then_record_failure(
    asl: dict[str, Any], state: str
) -> None:
    s = asl["States"][state]
    _throttle, retry = s["Retry"]  # throttling first (tests/infra/test_scale.py), then transient errors
    assert set(TRANSIENT_ERRORS) <= set(retry["ErrorEquals"])
    assert "States.ALL" not in retry["ErrorEquals"]  # a bad dataset fails fast, not three times
    assert retry["BackoffRate"] > 1 and retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] >= 2
    assert s["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": f"$.failure.{state}", "Next": "RecordFailure"}]


def test_a_failed_compact_bin_fails_the_map_into_record_failure(asl: dict[str, Any]) -> None:
    compact = asl["States"]["Compact"]
    _throttle, retry = compact["ItemProcessor"]["States"]["CompactBin"]["Retry"]
    assert retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] >= 2
    assert compact["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure.Compact", "Next": "RecordFailure"}
    ]


def test_failure_path_sends_the_failure_to_the_dlq_then_fails(synth: Synthesized, asl: dict[str, Any]) -> None:
    states = asl["States"]
    assert states["RecordFailure"]["Next"] == "SendToDlq"
    assert states["RecordFailure"]["Retry"][-1]["ErrorEquals"] == ["States.ALL"]
    send = states["SendToDlq"]
    assert send["Resource"] == "arn:aws:states:::sqs:sendMessage"
    assert send["Parameters"] == {"QueueUrl": f"<{synth.logical_id(synth.stack.queues.dlq)}>", "MessageBody.$": "$.dlq"}
    assert send["Retry"][0]["MaxAttempts"] >= 3
    assert send["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"


def test_state_machine_is_named_traced_and_logs_everything(synth: Synthesized) -> None:
    sm = _state_machine(synth)
    assert sm["StateMachineName"] == "dev-kc-compaction"
    assert sm["StateMachineType"] == "STANDARD"
    assert sm["TracingConfiguration"] == {"Enabled": True}
    assert sm["LoggingConfiguration"]["Level"] == "ALL"
    [dest] = sm["LoggingConfiguration"]["Destinations"]
    log_group_id = synth.logical_id(synth.stack.pipeline.log_group)
    assert dest["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": [log_group_id, "Arn"]}


def test_each_step_function_times_out_with_its_state(asl: dict[str, Any], synth: Synthesized) -> None:
    states = asl["States"]
    timeouts = {
        "validate": states["Validate"]["TimeoutSeconds"],
        "get_metadata": states["GetMetadata"]["TimeoutSeconds"],
        "compact": states["Compact"]["ItemProcessor"]["States"]["CompactBin"]["TimeoutSeconds"],
        "update": states["Update"]["TimeoutSeconds"],
        "record_failure": states["RecordFailure"]["TimeoutSeconds"],
    }
    for key, timeout in timeouts.items():
        assert synth.function(f"step-{key.replace('_', '-')}")["Timeout"] == timeout, key
    assert synth.function("step-compact")["MemorySize"] >= 1769


def _policy_statements(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for res in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in res["Properties"]["Roles"]:
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def test_state_machine_role_invokes_exactly_the_five_steps_and_sends_to_the_dlq(
    synth: Synthesized, step_ids: dict[str, str]
) -> None:
    role_id = synth.logical_id(synth.stack.pipeline.state_machine.role)
    statements = _policy_statements(synth, role_id)
    [invoke] = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert sorted(r["Fn::GetAtt"][0] for r in invoke["Resource"]) == sorted(step_ids.values())
    dlq_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.queues.dlq), "Arn"]}
    assert any("sqs:SendMessage" in s["Action"] and s["Resource"] == dlq_arn for s in statements)


def test_state_machine_role_may_run_its_distributed_map_and_nothing_wider(synth: Synthesized) -> None:
    role_id = synth.logical_id(synth.stack.pipeline.state_machine.role)
    statements = _policy_statements(synth, role_id)
    by_action = {a: s for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    arn = "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>"
    # Child executions of itself (by name: a Ref to itself would be a cycle), watched and stopped
    assert join_strings(by_action["states:StartExecution"]["Resource"]) == f"{arn}:stateMachine:dev-kc-compaction"
    for action in ("states:DescribeExecution", "states:StopExecution"):
        assert join_strings(by_action[action]["Resource"]) == f"{arn}:execution:dev-kc-compaction/*"
    # The ItemReader reads only plans' items files; the ResultWriter writes only under map-results/
    bucket = f"<{synth.logical_id(synth.stack.storage.bucket)}>"
    reads = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert [join_strings(s["Resource"]) for s in reads] == [f"{bucket}/plans/*/items.json"]
    writer = by_action["s3:PutObject"]
    assert sorted(writer["Action"]) == sorted(
        ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"]
    )
    assert join_strings(writer["Resource"]) == f"{bucket}/plans/*/map-results/*"
    # And nothing else of the bucket: no statement reaches the lake's Parquet (datasets/)
    assert all("datasets/" not in json.dumps(s["Resource"]) for s in statements)


@pytest.mark.parametrize("function", ["step-update", "step-record-failure"])
def test_the_steps_after_the_map_may_read_its_export_under_plans(synth: Synthesized, function: str) -> None:
    # Update reads the results from the export; RecordFailure reads a failed bin's error from it
    role_id = synth.function(function)["Role"]["Fn::GetAtt"][0]
    bucket = f"<{synth.logical_id(synth.stack.storage.bucket)}>"
    reads = [s for s in _policy_statements(synth, role_id) if "s3:GetObject" in s["Action"]]
    assert f"{bucket}/plans/*" in [join_strings(s["Resource"]) for s in reads]


def test_consumer_may_start_executions_of_this_state_machine_only(synth: Synthesized) -> None:
    sm_id = synth.logical_id(synth.stack.pipeline.state_machine)
    consumer = synth.function("consumer")
    assert consumer["Environment"]["Variables"]["FUSOU_STATE_MACHINE_ARN"] == {"Ref": sm_id}
    role_id = consumer["Role"]["Fn::GetAtt"][0]
    [start] = [s for s in _policy_statements(synth, role_id) if s["Action"] == "states:StartExecution"]
    assert start["Resource"] == {"Ref": sm_id}
