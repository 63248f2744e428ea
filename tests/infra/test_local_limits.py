"""The local stack holds Compact to what the synthesized template configures (issue 18, item 6):
memory, timeout and the environment beyond settings, read from the template as
``tests/infra/deployed.py`` reads a function's configuration."""

from __future__ import annotations

from fusou_compaction.local.stack import StackOptions
from fusou_compaction.topology import COMPACT_LAMBDA
from tests.infra.conftest import Synthesized


def test_the_local_compact_function_has_the_templates_memory_timeout_and_environment(synth: Synthesized) -> None:
    # Given the Compact function as the template configures it
    fn = synth.function("step-compact")
    variables = fn["Environment"]["Variables"]
    beyond_settings = {k: v for k, v in variables.items() if not k.startswith(("FUSOU_", "POWERTOOLS_"))}
    # Then the local stack runs it with the same memory and timeout, and the same environment
    assert StackOptions().compact_memory_mb == COMPACT_LAMBDA.memory_mb == fn["MemorySize"]
    assert COMPACT_LAMBDA.timeout_seconds == fn["Timeout"]
    assert beyond_settings == COMPACT_LAMBDA.environment
