"""An in-process executor of the pipeline definition: the local stand-in for Step Functions.

It runs the real Lambda handlers with the state machine's semantics: ResultPath, the Map over
bins with bounded concurrency (INLINE, or DISTRIBUTED: items read from the object store, one child
execution per item, results written back to it in the ResultWriter's layout), Retry by error name
with exponential backoff and full jitter, Catch into the failure path (RecordFailure → DLQ →
Fail). Payloads go through JSON between states, as they do in AWS. Delays can be scaled down
(``time_scale``) for tests and the demo.

It holds every execution to Step Functions' two per-execution limits, with AWS's error names:

- **Payload**: a state's input (after ItemSelector, for a Map's items), a task's result and a
  state's output (after ResultPath) are at most 262,144 bytes of UTF-8 JSON (measured compact:
  no spaces between tokens). Past it the state fails with ``States.DataLimitExceeded``, which AWS
  documents as a terminal error that no ``States.ALL`` retrier or catcher matches: the execution
  fails, RecordFailure never runs (only a catcher naming the error itself would match it).
- **History**: an execution fails with ``States.Runtime`` (no catcher matches it either) when its
  history would pass 25,000 events. Events are counted as AWS records them for the state types
  used here: ExecutionStarted and ExecutionSucceeded/Failed; each state's Entered and Exited (a
  Fail state only Entered; a state that fails records no Exited); a Lambda task's attempt is
  LambdaFunctionScheduled, Started and Succeeded/Failed/TimedOut (a throttled attempt counted the
  same); the SQS task's attempt TaskScheduled, Started and Succeeded/Failed; a Map adds
  MapStateStarted and MapStateSucceeded/Failed, an INLINE Map MapIterationStarted and
  MapIterationSucceeded/Failed per item around the item's own events, a DISTRIBUTED Map
  MapRunStarted and MapRunSucceeded/Failed and nothing per item: each child execution counts its
  own history. An approximation (AWS may differ by an event per state on paths like a caught
  failure), within a few events per state.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fusou_compaction.observability import logger
from fusou_compaction.pipeline.definition import (
    FAILURE_STATE,
    TERMINAL_FAIL,
    TERMINAL_SUCCEED,
    MapOverBins,
    Pipeline,
    Retry,
    SendToDlq,
    SkipChoice,
    Task,
)
from fusou_compaction.ports.messaging import ExecutionAlreadyStarted, Queue
from fusou_compaction.ports.object_store import ObjectStore, ObjectStoreError

Handler = Callable[[dict[str, Any], Any], Any]

PAYLOAD_LIMIT_BYTES = 262_144  # 256 KB: a state's input or output, a task's result
HISTORY_LIMIT = 25_000  # events in one execution's history
# Terminal errors: a States.ALL retrier or catcher never matches them.
TERMINAL_ERRORS = frozenset({"States.DataLimitExceeded", "States.Runtime"})
EXCEEDED_THRESHOLD = "States.ExceedToleratedFailureThreshold"
EXCEEDED_THRESHOLD_CAUSE = "The specified tolerated failure threshold was exceeded"
LOCAL_ARN = "arn:aws:states:local:000000000000"


@dataclass
class LocalContext:
    """What Powertools reads from a Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 1769
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: int = 900

    def __post_init__(self) -> None:
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class StepFailed(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@dataclass
class HistoryEvent:
    """One task attempt (what the console and tests read; ``Execution.events`` is AWS's count)."""

    state: str
    attempt: int
    error: str | None = None
    started: float = 0.0  # time.monotonic() at the start of the attempt
    seconds: float = 0.0


@dataclass
class Execution:
    name: str
    input: dict[str, Any]
    status: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    # Every task attempt of the run; a Map Run's child executions share their parent's list and
    # log theirs under the Map state's name.
    history: list[HistoryEvent] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    # What AWS counts against HISTORY_LIMIT, for this execution alone, and by type.
    events: int = 0
    event_types: Counter[str] = field(default_factory=Counter)
    # The largest payload (input, result or output of any state) and where it was.
    peak_payload_bytes: int = 0
    peak_payload_at: str | None = None
    children: list[Execution] = field(default_factory=list, repr=False)  # a Distributed Map's child executions
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def all_executions(self) -> list[Execution]:
        return [self, *(c for child in self.children for c in child.all_executions())]


def get_path(data: Any, path: str) -> Any:
    if path == "$":
        return data
    node = data
    for part in path.removeprefix("$.").split("."):
        if not isinstance(node, dict) or part not in node:
            raise StepFailed("States.Runtime", f"path {path} not found in the state")
        node = node[part]
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    if path == "$":
        return value if isinstance(value, dict) else {"value": value}
    out = copy.deepcopy(data)
    node = out
    parts = path.removeprefix("$.").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def error_name(exc: BaseException) -> str:
    """The name Retry and Catch match: the class name, or AWS's own (``Lambda.TooManyRequestsException``)
    for the stand-ins' errors, which carry it as ``error_name``."""
    return str(getattr(exc, "error_name", None) or type(exc).__name__)


def matches(error: str, error_equals: Iterable[str]) -> bool:
    """Whether a retrier's or catcher's ErrorEquals matches: by name, or States.ALL for any error
    but the terminal ones."""
    names = set(error_equals)
    return error in names or ("States.ALL" in names and error not in TERMINAL_ERRORS)


def payload_bytes(value: Any) -> int:
    """A payload's size as Step Functions limits it: UTF-8 bytes of its JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LocalRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        handlers: dict[str, Handler],
        dlq: Queue,
        *,
        store: ObjectStore | None = None,
        time_scale: float = 0.01,
        rng: random.Random | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.handlers = handlers
        self.dlq = dlq
        self.store = store  # a Distributed Map's ItemReader and ResultWriter
        self.time_scale = time_scale
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    # Retry with exponential backoff and full jitter, as Step Functions computes it.
    def _delay(self, retry: Retry, attempt: int) -> float:
        base = min(retry.interval_seconds * retry.backoff_rate ** (attempt - 1), retry.max_delay_seconds)
        if retry.jitter == "FULL":
            base = self.rng.uniform(0, base)
        return base * self.time_scale

    # The two limits -----------------------------------------------------------------------------
    @staticmethod
    def _event(ex: Execution, kind: str, *, final: bool = False) -> None:
        with ex.lock:
            if not final and ex.events >= HISTORY_LIMIT:
                raise StepFailed(
                    "States.Runtime",
                    f"The execution reached the maximum number of history events ({HISTORY_LIMIT:,}): "
                    f"no room for {kind}",
                )
            ex.events += 1
            ex.event_types[kind] += 1

    @staticmethod
    def _check_payload(ex: Execution, state: str, what: str, value: Any) -> None:
        size = payload_bytes(value)
        with ex.lock:
            if size > ex.peak_payload_bytes:
                ex.peak_payload_bytes, ex.peak_payload_at = size, f"{state} {what}"
        if size > PAYLOAD_LIMIT_BYTES:
            raise StepFailed(
                "States.DataLimitExceeded",
                f"The state/task '{state}' {what} has a size of {size:,} bytes, exceeding the maximum number of "
                f"bytes service limit ({PAYLOAD_LIMIT_BYTES:,}).",
            )

    # Tasks --------------------------------------------------------------------------------------
    def _invoke(
        self, ex: Execution, label: str, function: str, retries: tuple[Retry, ...], payload: Any, *, timeout: int
    ) -> Any:
        attempt = 0
        attempts = [0] * len(retries)  # each retrier counts its own attempts, as in ASL
        while True:
            attempt += 1
            self._event(ex, "LambdaFunctionScheduled")
            self._event(ex, "LambdaFunctionStarted")
            began = time.monotonic()
            try:
                ctx = LocalContext(function_name=f"local-{function}", timeout_seconds=timeout)
                result = self.handlers[function](_as_json(payload), ctx)
            except Exception as exc:  # the error's name is what Retry and Catch match, as in AWS
                name = error_name(exc)
                ex.history.append(HistoryEvent(label, attempt, name, began, time.monotonic() - began))
                self._event(ex, "LambdaFunctionTimedOut" if name == "States.Timeout" else "LambdaFunctionFailed")
                matched = next(
                    (i for i, r in enumerate(retries) if name not in TERMINAL_ERRORS and matches(name, r.errors)),
                    None,
                )
                if matched is not None and attempts[matched] + 1 < retries[matched].max_attempts:
                    attempts[matched] += 1
                    time.sleep(self._delay(retries[matched], attempts[matched]))
                    continue
                # Lambda's own errorType where it differs from the error's name (a function that ran
                # out of memory is Lambda.Unknown to the state machine, Runtime.OutOfMemory in its cause).
                error_type = str(getattr(exc, "error_type", None) or name)
                cause = json.dumps({"errorMessage": str(exc), "errorType": error_type})
                raise StepFailed(name, cause) from exc
            ex.history.append(HistoryEvent(label, attempt, None, began, time.monotonic() - began))
            self._event(ex, "LambdaFunctionSucceeded")
            return _as_json(result)

    def _task(self, ex: Execution, st: Task, data: Any, *, label: str | None = None) -> dict[str, Any]:
        self._event(ex, "TaskStateEntered")
        self._check_payload(ex, st.name, "input", data)
        result = self._invoke(ex, label or st.name, st.function, st.retries, data, timeout=st.timeout_seconds)
        self._check_payload(ex, st.name, "result", result)
        out = set_path(data, st.result_path, result)
        self._check_payload(ex, st.name, "output", out)
        self._event(ex, "TaskStateExited")
        return out

    def _send_dlq(self, ex: Execution, st: SendToDlq, data: dict[str, Any]) -> None:
        self._event(ex, "TaskStateEntered")
        body = get_path(data, st.message_path)
        self._check_payload(ex, st.name, "input", {"QueueUrl": self.dlq.url, "MessageBody": body})
        attempt = 0
        while True:
            attempt += 1
            self._event(ex, "TaskScheduled")
            self._event(ex, "TaskStarted")
            try:
                self.dlq.send(json.dumps(body))
            except Exception as exc:
                ex.history.append(HistoryEvent(st.name, attempt, type(exc).__name__))
                self._event(ex, "TaskFailed")
                if attempt >= st.retry.max_attempts:
                    raise StepFailed(type(exc).__name__, str(exc)) from exc
                time.sleep(self._delay(st.retry, attempt))
                continue
            ex.history.append(HistoryEvent(st.name, attempt))
            self._event(ex, "TaskSucceeded")
            self._event(ex, "TaskStateExited")
            return

    # Maps ---------------------------------------------------------------------------------------
    def _item_input(self, st: MapOverBins, data: dict[str, Any], item: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, path in st.item_selector.items():
            name = key.removesuffix(".$")
            out[name] = item if path == "$$.Map.Item.Value" else get_path(data, path)
        return out

    @staticmethod
    def _fan_out(
        count: int, concurrency: int, run_one: Callable[[int], Any], keep_going: Callable[[int], bool]
    ) -> tuple[list[Any], list[StepFailed | None], list[bool], StepFailed | None]:
        """run_one(i) for every item, at most ``concurrency`` at a time; once ``keep_going(failures)``
        says no, no item starts (what ran keeps its result; the rest never started)."""
        results: list[Any] = [None] * count
        errors: list[StepFailed | None] = [None] * count
        started = [False] * count
        lock = threading.Lock()
        state = {"next": 0, "failures": 0, "stop": False}
        first: list[StepFailed] = []

        def worker() -> None:
            while True:
                with lock:
                    if state["stop"] or state["next"] >= count:
                        return
                    i = state["next"]
                    state["next"] += 1
                    started[i] = True
                try:
                    results[i] = run_one(i)
                except StepFailed as exc:
                    errors[i] = exc
                    with lock:
                        first.append(exc)
                        state["failures"] += 1
                        if not keep_going(state["failures"]):
                            state["stop"] = True

        workers = max(1, min(concurrency, count))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map") as pool:
            for f in [pool.submit(worker) for _ in range(workers)]:
                f.result()
        return results, errors, started, (first[0] if first else None)

    def _map(self, ex: Execution, st: MapOverBins, data: dict[str, Any]) -> dict[str, Any]:
        self._event(ex, "MapStateEntered")
        self._check_payload(ex, st.name, "input", data)
        self._event(ex, "MapStateStarted")
        try:
            result: Any = self._inline(ex, st, data) if st.mode == "INLINE" else self._distributed(ex, st, data)
        except StepFailed:
            self._event(ex, "MapStateFailed")
            raise
        self._event(ex, "MapStateSucceeded")
        self._check_payload(ex, st.name, "result", result)
        out = set_path(data, st.result_path, result)
        self._check_payload(ex, st.name, "output", out)
        self._event(ex, "MapStateExited")
        return out

    def _inline(self, ex: Execution, st: MapOverBins, data: dict[str, Any]) -> list[Any]:
        assert st.items_path is not None
        items = get_path(data, st.items_path)

        def iteration(i: int) -> Any:
            self._event(ex, "MapIterationStarted")
            try:
                item_input = self._item_input(st, data, items[i])
                self._check_payload(ex, st.name, "item input", item_input)
                out = self._task(ex, st.iterator, item_input, label=st.name)
            except StepFailed:
                self._event(ex, "MapIterationFailed")
                raise
            self._event(ex, "MapIterationSucceeded")
            return out

        results, _errors, _started, first = self._fan_out(len(items), st.max_concurrency, iteration, lambda f: f == 0)
        if first is not None:  # as in AWS: the first failed iteration fails the Map
            raise first
        return results

    def _distributed(self, ex: Execution, st: MapOverBins, data: dict[str, Any]) -> dict[str, Any]:
        assert st.items_key_path is not None and st.results_prefix_path is not None
        store = self.store
        if store is None:
            raise StepFailed("States.ItemReaderFailed", "the local runner has no object store to read items from")
        key = str(get_path(data, st.items_key_path))
        try:
            items = json.loads(store.get_bytes(key))
        except (ObjectStoreError, ValueError) as exc:
            raise StepFailed("States.ItemReaderFailed", f"reading s3://{store.bucket}/{key}: {exc}") from exc
        if not isinstance(items, list):
            raise StepFailed("States.ItemReaderFailed", f"s3://{store.bucket}/{key} is not a JSON array")
        run = _MapRun(st, items, str(get_path(data, st.results_prefix_path)).rstrip("/"))
        self._event(ex, "MapRunStarted")

        def child_execution(i: int) -> None:
            child = Execution(name=f"{run.id}_{i:010d}", input={}, history=ex.history)
            run.children[i], run.began[i] = child, datetime.now(UTC)
            with ex.lock:
                ex.children.append(child)
            self._run_child(child, st, data, items[i])

        _results, _errors, started, _first = self._fan_out(len(items), st.max_concurrency, child_execution, run.within)
        manifest_key = run.write(store)
        if not run.within(run.failed) or not all(started):
            self._event(ex, "MapRunFailed")
            raise StepFailed(EXCEEDED_THRESHOLD, EXCEEDED_THRESHOLD_CAUSE)
        self._event(ex, "MapRunSucceeded")
        return {"MapRunArn": run.arn, "ResultWriterDetails": {"Bucket": store.bucket, "Key": manifest_key}}

    def _run_child(self, child: Execution, st: MapOverBins, data: dict[str, Any], item: Any) -> None:
        """One child execution of a Distributed Map: its own history, its own payload limit."""
        self._event(child, "ExecutionStarted")
        try:
            child.input = self._item_input(st, data, item)
            out = self._task(child, st.iterator, child.input, label=st.name)
        except StepFailed as exc:
            child.status, child.error, child.cause = "FAILED", exc.error, exc.cause
            self._event(child, "ExecutionFailed", final=True)
            raise
        finally:
            child.finished = time.monotonic()
        child.status, child.output = "SUCCEEDED", out
        self._event(child, "ExecutionSucceeded", final=True)

    # The execution ------------------------------------------------------------------------------
    def _terminal(self, ex: Execution, state_name: str | None, data: dict[str, Any]) -> bool:
        """Ends the execution if ``state_name`` is an end (None: a state with End: true)."""
        if state_name is not None and state_name not in TERMINAL_SUCCEED and state_name != TERMINAL_FAIL:
            return False
        if state_name == TERMINAL_FAIL:
            self._event(ex, "FailStateEntered")
            ex.status, ex.output = "FAILED", data
            self._event(ex, "ExecutionFailed", final=True)
            return True
        if state_name is not None:
            self._event(ex, "SucceedStateEntered")
            self._check_payload(ex, state_name, "input", data)
            self._event(ex, "SucceedStateExited")
        ex.status, ex.output = "SUCCEEDED", data
        self._event(ex, "ExecutionSucceeded", final=True)
        return True

    def _step(self, ex: Execution, st: Any, data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Runs one state: its output and the next state's name."""
        if isinstance(st, Task):
            return self._task(ex, st, data), st.next
        if isinstance(st, SkipChoice):
            self._event(ex, "ChoiceStateEntered")
            self._check_payload(ex, st.name, "input", data)
            self._event(ex, "ChoiceStateExited")
            return data, (st.when_equal if get_path(data, st.variable) == st.equals else st.otherwise)
        if isinstance(st, MapOverBins):
            return self._map(ex, st, data), st.next
        if isinstance(st, SendToDlq):
            self._send_dlq(ex, st, data)
            return data, st.next
        raise StepFailed("States.Runtime", f"unknown state {st!r}")

    def run(self, ex: Execution) -> Execution:
        data: dict[str, Any] = _as_json(ex.input)
        state_name: str | None = self.pipeline.start_at
        try:
            self._event(ex, "ExecutionStarted")
            while not self._terminal(ex, state_name, data):
                assert state_name is not None
                st = self.pipeline.states[state_name]
                try:
                    data, state_name = self._step(ex, st, data)
                except StepFailed as failure:
                    catches = isinstance(st, Task | MapOverBins) and getattr(st, "catch", True)
                    if not catches or not matches(failure.error, ["States.ALL"]):
                        raise
                    ex.error, ex.cause = failure.error, failure.cause
                    data = set_path(data, st.failure_path, {"Error": failure.error, "Cause": failure.cause})
                    state_name = FAILURE_STATE
        except StepFailed as failure:
            # Uncaught (the failure path itself failed, or a terminal error): no DLQ message.
            ex.status, ex.error, ex.cause = "FAILED", failure.error, failure.cause
            self._event(ex, "ExecutionFailed", final=True)
            logger.error(
                "local execution failed outside the failure path", extra={"execution": ex.name, "error": str(failure)}
            )
        ex.finished = time.monotonic()
        return ex


class _MapRun:
    """One Distributed Map run: its children and the ResultWriter's export of them."""

    def __init__(self, st: MapOverBins, items: list[Any], prefix: str) -> None:
        self.st, self.items, self.prefix = st, items, prefix
        self.id = str(uuid.uuid4())
        self.arn = f"{LOCAL_ARN}:mapRun:compaction/{st.name}:{self.id}"
        self.children: list[Execution | None] = [None] * len(items)
        self.began: list[datetime | None] = [None] * len(items)

    def within(self, failures: int) -> bool:
        """Whether this many failed children are tolerated (ToleratedFailurePercentage)."""
        return failures * 100 <= self.st.tolerated_failure_percentage * len(self.items)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.children if c is not None and c.status == "FAILED")

    def write(self, store: ObjectStore) -> str:
        """The ResultWriter's export, in its layout: ``<prefix>/<map run id>/`` holds one file per
        status (SUCCEEDED_0.json, FAILED_0.json, PENDING_0.json: JSON arrays of the child executions,
        their Input and Output as JSON strings) and manifest.json listing them. Written whether the
        Map Run succeeds or fails: a failed run's FAILED entries carry each child's Error and Cause."""
        by_status: dict[str, list[dict[str, Any]]] = {"SUCCEEDED": [], "FAILED": [], "PENDING": []}
        now = _iso(datetime.now(UTC))
        for i, child in enumerate(self.children):
            if child is None or child.status == "RUNNING":
                by_status["PENDING"].append({"Input": json.dumps(self.items[i]), "Status": "PENDING"})
                continue
            entry: dict[str, Any] = {
                "ExecutionArn": f"{LOCAL_ARN}:execution:compaction/{self.st.name}:{child.name}",
                "Input": json.dumps(child.input),
                "InputDetails": {"Included": True},
                "Name": child.name,
                "RedriveCount": 0,
                "RedriveStatus": "NOT_REDRIVABLE",
                "StartDate": _iso(self.began[i] or datetime.now(UTC)),
                "StateMachineArn": f"{LOCAL_ARN}:stateMachine:compaction/{self.st.name}",
                "Status": child.status,
                "StopDate": now,
            }
            if child.status == "SUCCEEDED":
                entry.update({"Output": json.dumps(child.output), "OutputDetails": {"Included": True}})
            else:
                entry.update({"Error": child.error, "Cause": child.cause})
            by_status[child.status].append(entry)
        base = f"{self.prefix}/{self.id}/"
        files: dict[str, list[dict[str, Any]]] = {}
        try:
            for status, entries in by_status.items():
                files[status] = []
                if entries:
                    body = json.dumps(entries).encode()
                    store.put(f"{base}{status}_0.json", body, content_type="application/json")
                    files[status].append({"Key": f"{base}{status}_0.json", "Size": len(body)})
            manifest = {"DestinationBucket": store.bucket, "MapRunArn": self.arn, "ResultFiles": files}
            store.put(f"{base}manifest.json", json.dumps(manifest).encode(), content_type="application/json")
        except ObjectStoreError as exc:
            raise StepFailed("States.ResultWriterFailed", f"writing s3://{store.bucket}/{base}: {exc}") from exc
        return f"{base}manifest.json"


class LocalStepFunctions:
    """The Orchestrator port, locally: executions run on a bounded pool, names are unique."""

    def __init__(
        self,
        runner: LocalRunner,
        *,
        max_workers: int = 4,
        on_start: Callable[[Execution], None] | None = None,
        on_end: Callable[[Execution], None] | None = None,
    ) -> None:
        self.runner = runner
        self.on_start, self.on_end = on_start, on_end  # the local stack's console feed
        self.executions: dict[str, Execution] = {}
        self._futures: dict[str, Future[Execution]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sfn")

    def start_execution(self, name: str, payload: dict[str, Any]) -> str:
        with self._lock:
            if name in self.executions:
                raise ExecutionAlreadyStarted(name)
            ex = Execution(name=name, input=payload)
            self.executions[name] = ex
            self._futures[name] = self._pool.submit(self._run, ex)
        return f"arn:aws:states:local:000000000000:execution:compaction:{name}"

    def _run(self, ex: Execution) -> Execution:
        self._observe(self.on_start, ex)
        self.runner.run(ex)
        self._observe(self.on_end, ex)
        return ex

    @staticmethod
    def _observe(observer: Callable[[Execution], None] | None, ex: Execution) -> None:
        if observer is not None:
            try:
                observer(ex)
            except Exception:
                logger.exception("an execution observer failed")

    def wait(self, timeout: float | None = None) -> list[Execution]:
        """Wait for every execution started so far."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self._futures.values() if not f.done()]
            if not pending:
                break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                raise TimeoutError(f"{len(pending)} executions still running")
            pending[0].result(timeout=remaining)
        with self._lock:
            return list(self.executions.values())

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
