"""The stage parameter names everything (built, not synthesized: cheap)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from aws_cdk import Stack

from fusou_infra.app import build_app


def test_stage_context_names_queues_state_machine_and_stack() -> None:
    # Given the app built for stage "prod" (no synthesis, no nag)
    _, stack, nag = build_app({"stage": "prod", "assetsDir": "", "nag": "false"})
    assert nag is None
    resolve = Stack.of(stack).resolve
    # Then every name carries the stage
    assert stack.stack_name == "prod-kc-compaction"
    assert resolve(stack.queues.queue.node.default_child.queue_name) == "prod-kc-compaction-queue"
    assert resolve(stack.queues.dlq.node.default_child.queue_name) == "prod-kc-compaction-dlq"
    assert resolve(stack.pipeline.state_machine.node.default_child.state_machine_name) == "prod-kc-compaction"
    assert resolve(stack.api.function.node.default_child.function_name) == "prod-kc-compaction-api"


def _compact_memory(stack: object) -> int:
    fn = stack.pipeline.steps["compact"]  # type: ignore[attr-defined]
    return int(Stack.of(fn).resolve(fn.node.default_child.memory_size))


def test_compact_memory_defaults_to_one_vcpu_and_follows_the_context() -> None:
    # Given the app built without and with compactMemoryMb (two vCPUs)
    _, default, _ = build_app({"stage": "dev", "assetsDir": "", "nag": "false"})
    _, doubled, _ = build_app({"stage": "dev", "assetsDir": "", "nag": "false", "compactMemoryMb": "3538"})

    # Then the compact step gets 1769 MB by default and what the context says otherwise; no other
    # function changes
    assert _compact_memory(default) == 1769
    assert _compact_memory(doubled) == 3538
    validate = doubled.pipeline.steps["validate"]
    assert Stack.of(validate).resolve(validate.node.default_child.memory_size) == 512


@pytest.mark.parametrize("value", ["512", "20000", "two", "1.5"])
def test_compact_memory_outside_lambdas_range_is_refused_with_the_range(value: str) -> None:
    # When the app is built with a compactMemoryMb Lambda cannot give, or the engine cannot run in
    with pytest.raises(ValueError, match=r"compactMemoryMb=.*1024 to 10240"):
        build_app({"stage": "dev", "assetsDir": "", "nag": "false", "compactMemoryMb": value})


def test_deploy_time_context_given_to_make_reaches_the_app(tmp_path: Path) -> None:
    # Given the operator's deploy-time context, as the runbook passes it to make
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path)}
    # When make synthesizes (make deploy runs the same app command with requireBuiltAssets)
    proc = subprocess.run(
        ["make", "-s", "synth", "STAGE=ops", "CONTEXT=alertEmail=ops@example.com compactMemoryMb=3538"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # Then the template has the subscription and the memory it asked for
    template = json.loads((tmp_path / "ops-kc-compaction.template.json").read_text())
    resources = template["Resources"].values()
    subscriptions = [r["Properties"] for r in resources if r["Type"] == "AWS::SNS::Subscription"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "ops@example.com")]
    compact = [
        r["Properties"]
        for r in resources
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("FunctionName") == "ops-kc-compaction-step-compact"
    ]
    assert compact[0]["MemorySize"] == 3538


def test_context_in_cdk_args_is_refused_before_anything_deploys() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["make", "-s", "deploy", "CDK_ARGS=--profile ops -c alertEmail=ops@example.com"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "use CONTEXT=" in proc.stdout + proc.stderr
