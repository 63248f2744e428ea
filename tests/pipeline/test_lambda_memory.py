"""Lambda's memory, locally (issue 18, item 6): each Compact invocation runs in an execution
environment of its own held to the function's configured memory, so what would run out of memory
in AWS fails locally the same way (``Lambda.Unknown``, errorType ``Runtime.OutOfMemory``) and is
retried as the state machine retries it in AWS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from fusou_compaction.local.lambda_process import LAMBDA_UNKNOWN, LambdaError, LambdaFunction, settings_environment
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.local.stack import LocalStack, StackOptions
from fusou_compaction.pipeline.definition import COMPACT_RETRY
from fusou_compaction.settings import Settings
from fusou_compaction.topology import COMPACT_LAMBDA

from .conftest import live_rows, row_multiset, seed_body, upload_fragments, wait_for

MiB = 1024 * 1024
HANDLERS = "tests.lambda_handlers"


@pytest.fixture
def function() -> Iterator[LambdaFunction]:
    lines: list[str] = []
    f = LambdaFunction(
        f"{HANDLERS}.dispatch", function_name="test-fn", memory_mb=200, environment={}, forward=lines.append
    )
    f.lines = lines  # type: ignore[attr-defined]
    yield f
    f.close()


def call(f: LambdaFunction, handler: str, event: dict[str, Any], timeout: int = 60) -> Any:
    return f({"do": handler, **event}, LocalContext(function_name=f.function_name, timeout_seconds=timeout))


def test_an_invocation_within_memory_runs_in_a_warm_environment_reused_after(function: LambdaFunction) -> None:
    first = call(function, "hog", {"mb": 40})
    second = call(function, "hog", {"mb": 40})
    assert first["held"] == 40 * MiB and second["pid"] == first["pid"] != os.getpid()
    assert (function.cold_starts, function.out_of_memory) == (1, 0)
    assert 40 * MiB < function.peak_rss < 200 * MiB


def test_past_its_memory_an_invocation_fails_as_lambdas_does_and_the_environment_is_replaced(
    function: LambdaFunction,
) -> None:
    before = call(function, "hog", {"mb": 10})["pid"]
    # When an invocation holds more than the function's 200 MB
    with pytest.raises(LambdaError) as caught:
        call(function, "hog", {"mb": 400})
    # Then it fails as Step Functions sees a Lambda run out of memory: Lambda.Unknown
    error = caught.value
    assert (type(error).__name__, error.error_name, error.error_type) == (
        LAMBDA_UNKNOWN,
        LAMBDA_UNKNOWN,
        "Runtime.OutOfMemory",
    )
    assert "past the function's 200 MB" in str(error)
    # And it was stopped near the limit, not after taking the 400 MB
    assert function.peak_rss < 300 * MiB
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)
    # And the next invocation gets a new environment
    after = call(function, "hog", {"mb": 10})
    assert after["pid"] != before and function.cold_starts == 2 and function.out_of_memory == 1


def test_memory_held_across_warm_invocations_counts_as_in_lambda(function: LambdaFunction) -> None:
    # Given an environment that kept 110 MB from an invocation (a module-level cache, say)
    call(function, "hog", {"mb": 110, "keep": True})
    # Then the next invocation of the same environment has that much less to work with
    with pytest.raises(LambdaError, match="signal: killed"):
        call(function, "hog", {"mb": 110, "keep": True})


def test_an_allocation_the_process_sees_fail_is_reported_as_out_of_memory(function: LambdaFunction) -> None:
    # Given an allocation no machine grants (Arrow raises ArrowMemoryError inside the function)
    with pytest.raises(LambdaError) as caught:
        call(function, "arrow_hog", {"mb": 1 << 30})
    assert caught.value.error_type == "Runtime.OutOfMemory" and function.out_of_memory == 1


def test_past_its_timeout_an_invocation_is_stopped_as_lambda_stops_it(function: LambdaFunction) -> None:
    started = time.monotonic()
    with pytest.raises(LambdaError) as caught:
        call(function, "sleep", {"seconds": 30}, timeout=1)
    assert caught.value.error_type == "Sandbox.Timedout" and "timed out after 1.00 seconds" in str(caught.value)
    assert time.monotonic() - started < 10


def test_a_functions_error_keeps_its_name_for_retry_and_catch_and_the_environment_stays(
    function: LambdaFunction,
) -> None:
    with pytest.raises(LambdaError) as caught:
        call(function, "fail", {})
    assert type(caught.value).__name__ == "ObjectStoreError" and str(caught.value) == "S3 is down"
    pid = call(function, "hog", {"mb": 1})["pid"]
    assert function.cold_starts == 1 and pid


def test_what_the_function_prints_goes_to_the_log_not_to_the_protocol(function: LambdaFunction) -> None:
    assert call(function, "say", {}) is None
    wait_for(lambda: any("a line the function printed" in line for line in function.lines), timeout=5)  # type: ignore[attr-defined]


def test_the_environment_is_the_functions_configuration() -> None:
    # Given the stack's settings, as the FUSOU_* variables of a deployed function
    settings = Settings(
        catalog_transport="postgres", database_url="postgresql://u:secret@h/db", jwt_secret="s" * 32, bucket="b-1"
    )
    env = settings_environment(settings)
    # Then a function started with them has the same settings (secrets included)
    f = LambdaFunction(
        f"{HANDLERS}.echo", function_name="test-echo", memory_mb=256, environment={**env, "ARROW_X": "1"}
    )
    try:
        got = f({"a": 1}, LocalContext(function_name="x"))
    finally:
        f.close()
    assert got["event"] == {"a": 1} and got["memory"] == 256 and got["function"] == "test-echo"
    assert got["env"]["FUSOU_DATABASE_URL"] == "postgresql://u:secret@h/db" and got["env"]["ARROW_X"] == "1"
    assert got["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    code = (
        "import json; from fusou_compaction.settings import Settings; "
        "from fusou_compaction.local.lambda_process import settings_environment; "
        "print(json.dumps(settings_environment(Settings())))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FUSOU_")}
    rebuilt = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    assert json.loads(rebuilt.stdout) == env


def test_environments_die_with_the_process_that_started_them_even_by_kill_9(tmp_path: Any) -> None:
    # Given a process that started an environment and is then killed with SIGKILL
    script = (
        "import sys, time\n"
        "from fusou_compaction.local.lambda_process import LambdaFunction\n"
        "from fusou_compaction.local.runner import LocalContext\n"
        f"f = LambdaFunction('{HANDLERS}.echo', function_name='t', memory_mb=256, environment={{}})\n"
        "print(f({}, LocalContext(function_name='t'))['pid'], flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    # Then the environment is gone too
    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=10)


# -- in the local stack, with the real Compact step ---------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(StackOptions(serve_api=False, run_daily_schedule=False, step_time_scale=0.001)) as s:
        yield s


def test_the_stack_runs_compact_with_the_deployed_functions_memory_and_environment(stack: LocalStack) -> None:
    f = stack.compact_function
    assert f is not None
    assert f.memory_mb == COMPACT_LAMBDA.memory_mb and f.timeout_seconds == COMPACT_LAMBDA.timeout_seconds
    assert COMPACT_LAMBDA.environment.items() <= f.environment.items()
    assert f.environment["FUSOU_DATABASE_URL"] and f.function_name == "dev-kc-compaction-step-compact"


def test_a_compact_past_its_memory_is_retried_as_in_aws_then_fails_and_runs_again_once_it_fits(
    stack: LocalStack,
) -> None:
    deps, f = stack.deps, stack.compact_function
    assert deps is not None and f is not None and stack.aws is not None
    # Given the Compact function held to what its cold start takes plus 60 MB (its peak in AWS
    # terms: the interpreter, pyarrow, boto3 and psycopg loaded), and a bin that needs far more
    with pytest.raises(LambdaError):
        f({}, LocalContext(function_name="x"))  # a cold start alone (the event is refused)
    cold = f.peak_rss
    f.memory_mb = cold // MiB + 60
    up = upload_fragments(deps.catalog, deps.store, fragments=40, rows=20_000, tables=("battle",))
    sqs = boto3.client("sqs", endpoint_url=stack.aws.endpoint_url, region_name=stack.aws.region)
    try:
        # When the dataset is compacted
        sqs.send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
        wait_for(lambda: _settled(stack, up), timeout=180)
    finally:
        f.memory_mb = COMPACT_LAMBDA.memory_mb
    # Then each attempt was stopped as Lambda stops it, the state machine retried it as its
    # Retry says (Lambda.Unknown is one of the transient errors), then failed the run at Compact
    runs = deps.catalog.dataset_status(up.dataset).runs
    ex = next(e for e in stack.sfn.executions.values() if e.name.startswith(str(up.dataset)))  # type: ignore[union-attr]
    history = [(h.state, h.error) for h in ex.history]
    assert len(runs) == 1, (runs, history)
    run = runs[0]
    assert (run.status, run.error_step) == ("failed", "Compact"), (run, history)
    assert (run.error or "").startswith(f"{LAMBDA_UNKNOWN}: ") and "signal: killed" in (run.error or "")
    attempts = [error for state, error in history if state == "Compact"]
    assert attempts == [LAMBDA_UNKNOWN] * COMPACT_RETRY.max_attempts, history
    # And the cause recorded is Lambda's, errorType Runtime.OutOfMemory: the Distributed Map's own
    # error only says a child failed, and RecordFailure read the child's from the Map Run's export
    assert ex.output is not None
    assert ex.output["failure"]["Compact"]["Error"] == "States.ExceedToleratedFailureThreshold"
    cause = json.loads(ex.output["dlq"]["cause"])
    assert cause["errorType"] == "Runtime.OutOfMemory" and "past the function's" in cause["errorMessage"]
    assert f.out_of_memory >= COMPACT_RETRY.max_attempts
    # And nothing was quarantined or lost: every fragment is live, and the failure reached the DLQ
    assert deps.catalog.list_quarantined(up.dataset) == []
    assert {x.kind for x in deps.catalog.list_live_files(up.dataset)} == {"fragment"}
    wait_for(lambda: any(x.run_id == run.id for x in deps.catalog.list_recent_failures(50)), timeout=30)
    # When the function has its memory back and the dataset is triggered again
    sqs.send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
    # (a cold start after the killed environment, under a loaded CI machine, can take a while:
    # the wait is generous, and says where the run stood if it runs out)
    wait_for(
        lambda: _settled(stack, up) and len(deps.catalog.dataset_status(up.dataset).runs) == 2,
        timeout=300,
        describe=lambda: _where(stack, up),
    )
    # Then it compacts, every row once
    assert deps.catalog.dataset_status(up.dataset).runs[0].status == "succeeded"
    assert row_multiset(live_rows(deps.catalog, deps.store, up.dataset, "battle")) == row_multiset(  # type: ignore[arg-type]
        up.rows["battle"]
    )


def _where(stack: LocalStack, up: Any) -> Any:
    """The dataset's runs, its executions' histories and the Compact function's counters."""
    assert stack.deps is not None and stack.compact_function is not None
    runs = [(r.id, r.status, r.error_step, r.status_reason) for r in stack.deps.catalog.dataset_status(up.dataset).runs]
    executions = [
        (e.name, e.status, [(h.state, h.error) for h in e.history][-8:])
        for e in stack.sfn.executions.values()  # type: ignore[union-attr]
        if e.name.startswith(str(up.dataset))
    ]
    f = stack.compact_function
    return {"runs": runs, "executions": executions, "compact": (f.cold_starts, f.out_of_memory, f.memory_mb)}


def _settled(stack: LocalStack, up: Any) -> bool:
    assert stack.deps is not None
    runs = stack.deps.catalog.dataset_status(up.dataset).runs
    return bool(runs) and all(r.status not in ("queued", "running") for r in runs)


def test_the_json_of_an_invocation_round_trips(function: LambdaFunction) -> None:
    event = {"s": "é", "n": [1, 2.5, None], "nested": {"t": True}}
    assert call(function, "echo", event)["event"] == json.loads(json.dumps(event))
