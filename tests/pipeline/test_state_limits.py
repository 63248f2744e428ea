"""Step Functions' per-execution limits, held by the local runner as AWS holds them (issue 19, item 4):
256 KB of payload per state (States.DataLimitExceeded, which no States.ALL catcher matches) and
25,000 history events (States.Runtime). The old INLINE Map breaks both at scale; the Distributed
Map the pipeline runs breaks neither. Fake handlers, the real runner and definition: no AWS here."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from fusou_compaction.adapters.local_store import LocalObjectStore
from fusou_compaction.local.runner import (
    HISTORY_LIMIT,
    PAYLOAD_LIMIT_BYTES,
    Execution,
    LocalRunner,
    payload_bytes,
)
from fusou_compaction.pipeline.definition import (
    STEP_RETRY,
    MapOverBins,
    Pipeline,
    Task,
    build_pipeline,
)

ITEMS_KEY = "plans/run/items.json"
RESULTS_PREFIX = "plans/run/map-results"


class RecordingQueue:
    url = "dlq"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        self.sent.append(body)
        return "m"


def compact_result(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """What a Compact invocation returns (a CompactResult's JSON, ~300 bytes)."""
    b = event["bin"]
    return {
        "table": "battle",
        "index": b,
        "manifestKey": f"plans/{uuid4()}/results/battle/{b:05d}.json",
        "rowsIn": 1234,
        "rowsOut": 1234,
        "filesOut": 1,
        "bytesOut": 130_000_000,
        "quarantined": 0,
    }


def handlers(**overrides: Any) -> dict[str, Any]:
    record_failure_calls: list[dict[str, Any]] = []

    def record_failure(event: dict[str, Any], context: Any) -> dict[str, Any]:
        record_failure_calls.append(event)
        return {"recorded": True}

    out: dict[str, Any] = {
        "validate": lambda e, c: {"action": "compact"},
        "compact": compact_result,
        "update": lambda e, c: {"committed": True},
        "record_failure": record_failure,
        "_record_failure_calls": record_failure_calls,
    }
    out.update(overrides)
    return out


def execution() -> Execution:
    return Execution("e", {"execution": {"runId": str(uuid4()), "message": {"datasetId": str(uuid4())}}})


def inline_pipeline(items: int) -> Pipeline:
    """The pipeline as it was before issue 19: the bins in the state, an INLINE Map gathering results."""
    pipeline = build_pipeline(8)
    compact = pipeline.states["Compact"]
    assert isinstance(compact, MapOverBins)
    states = dict(pipeline.states)
    states["Compact"] = MapOverBins(
        name="Compact",
        mode="INLINE",
        items_path="$.plan.bins",
        item_selector=compact.item_selector,
        max_concurrency=8,
        iterator=compact.iterator,
        result_path="$.compact",
        next="Update",
    )
    return Pipeline(start_at=pipeline.start_at, states=states)


def runner(pipeline: Pipeline, h: dict[str, Any], tmp_path: Path, items: int) -> tuple[LocalRunner, RecordingQueue]:
    store = LocalObjectStore(tmp_path)
    store.put(ITEMS_KEY, json.dumps(list(range(items))).encode())
    plan: dict[str, Any] = {"planKey": "plans/run/", "itemsKey": ITEMS_KEY, "resultsPrefix": RESULTS_PREFIX}
    compact = pipeline.states["Compact"]
    if isinstance(compact, MapOverBins) and compact.mode == "INLINE":
        plan["bins"] = list(range(items))  # the old design: the items in the state
    h = {**h, "get_metadata": lambda e, c: plan}
    dlq = RecordingQueue()
    return LocalRunner(pipeline, h, dlq, store=store, time_scale=0.0, rng=random.Random(1)), dlq  # type: ignore[arg-type]


# The payload limit ------------------------------------------------------------------------------
def one_task(result_size: int) -> tuple[Pipeline, dict[str, Any]]:
    """One task whose result is exactly ``result_size`` bytes of JSON (its output is its result)."""
    pad = "x" * (result_size - payload_bytes({"pad": ""}))
    pipeline = Pipeline(start_at="Big", states={"Big": Task("Big", "big", "$", STEP_RETRY, 60, next=None)})
    return pipeline, {"big": lambda e, c: {"pad": pad}, "record_failure": lambda e, c: {}}


def test_a_result_of_exactly_256_kb_passes_and_one_byte_more_fails_with_data_limit_exceeded() -> None:
    for size, status in ((PAYLOAD_LIMIT_BYTES, "SUCCEEDED"), (PAYLOAD_LIMIT_BYTES + 1, "FAILED")):
        pipeline, h = one_task(size)
        ex = LocalRunner(pipeline, h, RecordingQueue()).run(execution())  # type: ignore[arg-type]
        assert ex.status == status, (size, ex.error, ex.cause)
        assert ex.peak_payload_bytes == size
    assert ex.error == "States.DataLimitExceeded" and "'Big' result" in (ex.cause or "")


def test_a_state_over_256_kb_fails_the_execution_and_no_catch_runs_the_failure_path(tmp_path: Path) -> None:
    # Given the pipeline, and an Update whose result is 300 KB
    h = handlers(update=lambda e, c: {"pad": "x" * 300_000})
    r, dlq = runner(build_pipeline(8), h, tmp_path, items=3)
    # When it runs
    ex = r.run(execution())
    # Then the execution fails with AWS's terminal error: the Catch (States.ALL) does not match it,
    # so RecordFailure never runs and nothing reaches the DLQ, as in AWS
    assert (ex.status, ex.error) == ("FAILED", "States.DataLimitExceeded")
    assert h["_record_failure_calls"] == [] and dlq.sent == []
    assert "RecordFailure" not in [a.state for a in ex.history]
    assert ex.event_types["ExecutionFailed"] == 1


def test_the_old_inline_map_of_2000_bins_gathers_more_than_256_kb_and_fails(tmp_path: Path) -> None:
    # Given the INLINE Map of before issue 19 and a plan of 2,000 bins (today's max_bins_per_run)
    r, dlq = runner(inline_pipeline(2000), handlers(), tmp_path, items=2000)
    # When it runs
    ex = r.run(execution())
    # Then every bin compacted, but the Map's gathered results (~300 bytes each) do not fit a state
    assert (ex.status, ex.error) == ("FAILED", "States.DataLimitExceeded"), ex.cause
    assert "'Compact' result" in (ex.cause or "")
    assert len([a for a in ex.history if a.state == "Compact"]) == 2000
    assert dlq.sent == []


# The history limit ------------------------------------------------------------------------------
def test_the_old_inline_map_of_4000_bins_passes_25000_history_events_and_fails(tmp_path: Path) -> None:
    # Given the INLINE Map and 4,000 bins whose results are small (the payload would fit)
    tiny = handlers(compact=lambda e, c: {"b": e["bin"]})
    r, dlq = runner(inline_pipeline(4000), tiny, tmp_path, items=4000)
    # When it runs
    ex = r.run(execution())
    # Then its history (7 events per bin, all in the one execution) reaches 25,000 and the
    # execution fails with States.Runtime, which no catcher matches: no failure path, no DLQ
    assert (ex.status, ex.error) == ("FAILED", "States.Runtime"), ex.cause
    assert "25,000" in (ex.cause or "")
    assert ex.events == HISTORY_LIMIT + 1  # the limit, then ExecutionFailed
    assert dlq.sent == []


def test_the_distributed_map_runs_the_same_4000_bins_within_both_limits(tmp_path: Path) -> None:
    # Given the pipeline as deployed and 4,000 bins with full-size results
    r, _ = runner(build_pipeline(8), handlers(), tmp_path, items=4000)
    # When it runs
    ex = r.run(execution())
    # Then it succeeds: the parent's history does not grow with the bins, each bin's child execution
    # has its own, and the state only ever held keys
    assert ex.status == "SUCCEEDED", (ex.error, ex.cause)
    assert len(ex.children) == 4000 and {c.status for c in ex.children} == {"SUCCEEDED"}
    assert ex.events < 40 and max(c.events for c in ex.children) == 7
    assert ex.peak_payload_bytes < 2048 and max(c.peak_payload_bytes for c in ex.children) < 2048
    # And the results are in S3, in the ResultWriter's layout, one per bin
    store = r.store
    assert store is not None and ex.output is not None
    manifest = json.loads(store.get_bytes(ex.output["compact"]["ResultWriterDetails"]["Key"]))
    assert manifest["ResultFiles"]["FAILED"] == [] and manifest["ResultFiles"]["PENDING"] == []
    (succeeded,) = manifest["ResultFiles"]["SUCCEEDED"]
    entries = json.loads(store.get_bytes(succeeded["Key"]))
    assert sorted(json.loads(e["Output"])["index"] for e in entries) == list(range(4000))


def test_history_is_counted_as_aws_records_it(tmp_path: Path) -> None:
    # Given a run of one bin, one Update attempt failing transiently then succeeding
    calls: list[int] = []

    def update(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise type("CatalogUnavailable", (Exception,), {})("reset")
        return {"committed": True}

    r, _ = runner(build_pipeline(8), handlers(update=update), tmp_path, items=1)
    ex = r.run(execution())
    assert ex.status == "SUCCEEDED"
    # Then the parent counts: ExecutionStarted; per task state Entered + 3 per attempt + Exited
    # (Validate 5, GetMetadata 5, Update with two attempts 8); Choice 2; the Distributed Map 6
    # (Entered, Started, MapRunStarted, MapRunSucceeded, Succeeded, Exited); Succeed 2; ExecutionSucceeded
    assert ex.events == 1 + 5 + 2 + 5 + 6 + 8 + 2 + 1
    assert ex.event_types["LambdaFunctionFailed"] == 1 and ex.event_types["MapRunStarted"] == 1
    # And the child: ExecutionStarted, TaskStateEntered, 3 for the attempt, TaskStateExited, ExecutionSucceeded
    (child,) = ex.children
    assert child.events == 7 and child.event_types["ExecutionSucceeded"] == 1


# A failed bin -----------------------------------------------------------------------------------
class BinBroken(Exception):
    """Not a transient error: no retrier matches it."""


@pytest.mark.parametrize("failing_bin", [0, 7])
def test_a_failed_bin_fails_the_map_as_aws_does_and_its_own_error_is_in_the_export(
    tmp_path: Path, failing_bin: int
) -> None:
    def compact(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["bin"] == failing_bin:
            raise BinBroken("bin cannot be compacted")
        return compact_result(event, context)

    h = handlers(compact=compact)
    r, dlq = runner(build_pipeline(2), h, tmp_path, items=40)
    ex = r.run(execution())
    # Then the Map fails with the Map Run's error, which the Catch sends down the failure path
    assert ex.status == "FAILED"
    assert ex.output is not None
    assert ex.output["failure"]["Compact"]["Error"] == "States.ExceedToleratedFailureThreshold"
    (recorded,) = h["_record_failure_calls"]
    assert recorded["plan"]["resultsPrefix"] == RESULTS_PREFIX and len(dlq.sent) == 1
    # And the bin's own error and cause are in the Map Run's export, FAILED, where RecordFailure reads them
    store = r.store
    assert store is not None
    (manifest_key,) = [o.key for o in store.list_objects(RESULTS_PREFIX + "/") if o.key.endswith("manifest.json")]
    files = json.loads(store.get_bytes(manifest_key))["ResultFiles"]
    (failed,) = json.loads(store.get_bytes(files["FAILED"][0]["Key"]))
    assert failed["Error"] == "BinBroken" and json.loads(failed["Cause"])["errorMessage"] == "bin cannot be compacted"
    # And once the failure was seen no new bin started (a fail-fast Map Run): the rest are PENDING
    pending = json.loads(store.get_bytes(files["PENDING"][0]["Key"])) if files["PENDING"] else []
    assert len(pending) >= 40 - 2 - failing_bin - 2
    # (BinBroken matched no retrier: one attempt, no retry)
    assert [a.error for a in ex.history if a.error] == ["BinBroken"]
