"""An in-process executor of the pipeline definition: the local stand-in for Step Functions.

It runs the real Lambda handlers with the state machine's semantics: ResultPath, the Map over
bins with bounded concurrency, Retry by error name with exponential backoff and full jitter,
Catch into the failure path (RecordFailure → DLQ → Fail). Payloads go through JSON between
states, as they do in AWS. Delays can be scaled down (``time_scale``) for tests and the demo.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fusou_compaction.observability import logger
from fusou_compaction.pipeline.definition import (
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

Handler = Callable[[dict[str, Any], Any], Any]


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
    history: list[HistoryEvent] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


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


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class LocalRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        handlers: dict[str, Handler],
        dlq: Queue,
        *,
        time_scale: float = 0.01,
        rng: random.Random | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.handlers = handlers
        self.dlq = dlq
        self.time_scale = time_scale
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    # Retry with exponential backoff and full jitter, as Step Functions computes it.
    def _delay(self, retry: Retry, attempt: int) -> float:
        base = min(retry.interval_seconds * retry.backoff_rate ** (attempt - 1), retry.max_delay_seconds)
        if retry.jitter == "FULL":
            base = self.rng.uniform(0, base)
        return base * self.time_scale

    def _invoke(
        self, ex: Execution, state: str, function: str, retries: tuple[Retry, ...], payload: Any, *, timeout: int
    ) -> Any:
        attempt = 0
        attempts = [0] * len(retries)  # each retrier counts its own attempts, as in ASL
        while True:
            attempt += 1
            began = time.monotonic()
            try:
                ctx = LocalContext(function_name=f"local-{function}", timeout_seconds=timeout)
                result = self.handlers[function](_as_json(payload), ctx)
                ex.history.append(HistoryEvent(state, attempt, None, began, time.monotonic() - began))
                return _as_json(result)
            except Exception as exc:  # the error's name is what Retry and Catch match, as in AWS
                name = error_name(exc)
                ex.history.append(HistoryEvent(state, attempt, name, began, time.monotonic() - began))
                matched = next((i for i, r in enumerate(retries) if name in r.errors or "States.ALL" in r.errors), None)
                if matched is not None and attempts[matched] + 1 < retries[matched].max_attempts:
                    attempts[matched] += 1
                    time.sleep(self._delay(retries[matched], attempts[matched]))
                    continue
                # Lambda's own errorType where it differs from the error's name (a function that ran
                # out of memory is Lambda.Unknown to the state machine, Runtime.OutOfMemory in its cause).
                error_type = str(getattr(exc, "error_type", None) or name)
                cause = json.dumps({"errorMessage": str(exc), "errorType": error_type})
                raise StepFailed(name, cause) from exc

    def _send_dlq(self, ex: Execution, st: SendToDlq, data: dict[str, Any]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self.dlq.send(json.dumps(get_path(data, st.message_path)))
                ex.history.append(HistoryEvent(st.name, attempt))
                return
            except Exception as exc:
                ex.history.append(HistoryEvent(st.name, attempt, type(exc).__name__))
                if attempt >= st.retry.max_attempts:
                    raise StepFailed(type(exc).__name__, str(exc)) from exc
                time.sleep(self._delay(st.retry, attempt))

    def _run_map(self, ex: Execution, st: MapOverBins, data: dict[str, Any]) -> list[Any]:
        items = get_path(data, st.items_path)

        def item_input(item: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, path in st.item_selector.items():
                name = key.removesuffix(".$")
                out[name] = item if path == "$$.Map.Item.Value" else get_path(data, path)
            return out

        it = st.iterator
        with ThreadPoolExecutor(max_workers=max(1, st.max_concurrency), thread_name_prefix="map") as pool:
            futures = [
                pool.submit(
                    self._invoke, ex, st.name, it.function, it.retries, item_input(i), timeout=it.timeout_seconds
                )
                for i in items
            ]
            results: list[Any] = []
            failure: StepFailed | None = None
            for f in futures:
                try:
                    results.append(f.result())
                except StepFailed as exc:
                    failure = failure or exc  # as in AWS: the first failed iteration fails the Map
            if failure is not None:
                raise failure
        return results

    def run(self, ex: Execution) -> Execution:
        data: dict[str, Any] = _as_json(ex.input)
        state_name: str | None = self.pipeline.start_at
        try:
            while state_name is not None:
                if state_name in TERMINAL_SUCCEED:
                    ex.status, ex.output = "SUCCEEDED", data
                    break
                if state_name == TERMINAL_FAIL:
                    ex.status, ex.output = "FAILED", data
                    break
                st = self.pipeline.states[state_name]
                try:
                    if isinstance(st, Task):
                        result = self._invoke(ex, st.name, st.function, st.retries, data, timeout=st.timeout_seconds)
                        data = set_path(data, st.result_path, result)
                        state_name = st.next
                    elif isinstance(st, SkipChoice):
                        state_name = st.when_equal if get_path(data, st.variable) == st.equals else st.otherwise
                    elif isinstance(st, MapOverBins):
                        data = set_path(data, st.result_path, self._run_map(ex, st, data))
                        state_name = st.next
                    elif isinstance(st, SendToDlq):
                        self._send_dlq(ex, st, data)
                        state_name = st.next
                    else:
                        raise StepFailed("States.Runtime", f"unknown state {state_name}")
                except StepFailed as failure:
                    catch = getattr(st, "catch", True) and not isinstance(st, SendToDlq | SkipChoice)
                    if not catch:
                        raise
                    ex.error = failure.error
                    data = set_path(data, st.failure_path, {"Error": failure.error, "Cause": failure.cause})
                    state_name = "RecordFailure"
        except StepFailed as failure:
            # The failure path itself failed: the execution fails without a DLQ message.
            ex.status, ex.error = "FAILED", failure.error
            logger.error(
                "local execution failed outside the failure path", extra={"execution": ex.name, "error": str(failure)}
            )
        if ex.status == "RUNNING":
            ex.status = "SUCCEEDED"
        ex.finished = time.monotonic()
        return ex


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
