"""The stage parameter names everything (built, not synthesized: cheap)."""

from __future__ import annotations

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
