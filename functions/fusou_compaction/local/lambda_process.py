"""Lambda's memory limit (and timeout), locally: a function runs in execution environments of its
own, worker processes watched by the stand-in, as Lambda runs it in sandboxes it watches.

In AWS, a function that goes past its configured memory is killed at once (the invocation fails
with ``Runtime.OutOfMemory``, which Step Functions reports as ``Lambda.Unknown``, so the state
machine's retry of Lambda's transient errors applies), and one that runs past its timeout likewise
(``Sandbox.Timedout``). In one Python process the local stack could enforce neither: a Compact
that would run out of memory in AWS ran to the end locally, on the machine's memory. So each
invocation runs in a worker (:mod:`fusou_compaction.local.lambda_worker`) started with the
function's configuration as its environment, and the stand-in watches it:

- memory: the worker's peak resident set (``VmHWM``, so a spike between two looks is not missed),
  checked every 10 ms, against the configured memory; past it the worker is killed (SIGKILL) and
  the invocation fails as Lambda's does. An allocation the process itself sees fail is reported
  the same way by the worker;
- time: past the invocation's timeout the worker is killed, and the invocation fails as Lambda's;
- environments are reused while warm (the cold start, importing the handler, is paid once), and a
  killed one is replaced by a new one, as Lambda replaces a sandbox.

Workers die with the stack, even on ``kill -9`` (PR_SET_PDEATHSIG, set from one long-lived
thread: the signal follows the thread that started the child).
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from pydantic import SecretStr

from fusou_compaction.local.lambda_worker import OUT_OF_MEMORY_EXIT
from fusou_compaction.local.postgres import die_with_parent
from fusou_compaction.observability import logger
from fusou_compaction.settings import Settings

POLL_SECONDS = 0.01
OUT_OF_MEMORY = "Runtime.OutOfMemory"
TIMED_OUT = "Sandbox.Timedout"
EXITED = "Runtime.ExitError"
# What Step Functions reports for a Lambda function that ran out of memory, timed out or crashed.
LAMBDA_UNKNOWN = "Lambda.Unknown"


class LambdaError(Exception):
    """An invocation's failure, by the name the state machine matches (``error_name``) and the
    errorType Lambda puts in the cause (``error_type``)."""

    error_name = LAMBDA_UNKNOWN

    def __init__(self, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _named(name: str) -> type[LambdaError]:
    # The runner matches Retry and Catch by the error's name: an exception class of that name
    # (``ObjectStoreError``, ``Lambda.Unknown``), which also carries it as ``error_name``.
    cls = _ERRORS.get(name)
    if cls is None:
        cls = type(name, (LambdaError,), {"error_name": name})
        _ERRORS[name] = cls
    return cls


_ERRORS: dict[str, type[LambdaError]] = {}


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as the FUSOU_* variables a deployed function is configured with."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | dict):
            value = json.dumps(value)
        env[f"FUSOU_{name.upper()}"] = str(value)
    return env


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _to_stdout(line: str) -> None:
    # Looked up per line: the local stack may point sys.stdout at its log file meanwhile.
    sys.stdout.write(line)


class _Spawner(threading.Thread):
    """Starts every worker from one thread that lives as long as the function: PR_SET_PDEATHSIG
    fires when the starting *thread* ends, and the runner's Map threads come and go."""

    def __init__(self) -> None:
        super().__init__(name="lambda-spawner", daemon=True)
        self.requests: queue.Queue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]] | None] = queue.Queue()

    def run(self) -> None:
        while (item := self.requests.get()) is not None:
            start, done = item
            try:
                done.set_result(start())
            except BaseException as exc:
                done.set_exception(exc)

    def spawn(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        done: Future[subprocess.Popen[bytes]] = Future()
        self.requests.put((start, done))
        return done.result()

    def stop(self) -> None:
        self.requests.put(None)


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], forward: Callable[[str], None]) -> None:
        self.proc = proc
        self.buffer = b""
        assert proc.stderr is not None
        self._forwarder = threading.Thread(target=self._forward, args=(proc.stderr, forward), daemon=True)
        self._forwarder.start()

    @staticmethod
    def _forward(stream: Any, forward: Callable[[str], None]) -> None:
        for line in iter(stream.readline, b""):
            forward(line.decode("utf-8", "replace"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()  # the worker's loop ends: it exits
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


class LambdaFunction:
    """A handler (``module.function``) invoked like a Lambda function configured with
    ``memory_mb`` and ``environment``: callable as ``(event, context)``, raising the failure
    Step Functions would see. ``keep_warm`` idle environments are kept for the next invocations."""

    def __init__(
        self,
        handler: str,
        *,
        function_name: str,
        memory_mb: int,
        environment: Mapping[str, str],
        timeout_seconds: int = 900,
        keep_warm: int = 2,
        forward: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.function_name = function_name
        self.memory_mb = memory_mb
        self.environment = dict(environment)
        self.timeout_seconds = timeout_seconds
        self.keep_warm = keep_warm
        self.forward = forward or _to_stdout
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._spawner = _Spawner()
        self._spawner.start()
        self._closed = False
        self.cold_starts = 0
        self.out_of_memory = 0
        self.peak_rss = 0  # the highest peak RSS any invocation reached, in bytes

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    def _start(self) -> subprocess.Popen[bytes]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FUSOU_", "AWS_LAMBDA_"))},
            **self.environment,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout_seconds),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "fusou_compaction.local.lambda_worker", self.handler],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 (only prctl and getppid run there)
        )

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.function_name} is shut down")
            worker = self._idle.pop() if self._idle else None
        if worker is None or worker.proc.poll() is not None:
            worker = _Worker(self._spawner.spawn(self._start), self.forward)
            self.cold_starts += 1
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = healthy and not self._closed and len(self._idle) < self.keep_warm
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.close() if healthy else worker.kill()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        timeout = min(self.timeout_seconds, int(getattr(context, "timeout_seconds", self.timeout_seconds)))
        request_id = str(getattr(context, "aws_request_id", None) or uuid.uuid4())
        worker = self._take()
        healthy = False
        try:
            request = {"event": event, "requestId": request_id, "timeoutSeconds": timeout}
            assert worker.proc.stdin is not None
            try:
                worker.proc.stdin.write((json.dumps(request, default=str) + "\n").encode())
                worker.proc.stdin.flush()
            except OSError:
                pass  # it died before the request: _await says how
            response = self._await(worker, request_id, timeout)
            healthy = True
        finally:
            self._give_back(worker, healthy=healthy)
        if "error" in response:
            error = response["error"]
            raise _named(error["name"])(error["message"], error_type=error.get("type", error["name"]))
        return response["result"]

    def _await(self, worker: _Worker, request_id: str, timeout: int) -> dict[str, Any]:
        proc = worker.proc
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            peak = peak_rss_bytes(proc.pid)
            if peak is not None:
                self.peak_rss = max(self.peak_rss, peak)
                if peak > self.memory_bytes:
                    worker.kill()
                    self.out_of_memory += 1
                    raise _named(LAMBDA_UNKNOWN)(
                        f"RequestId: {request_id} Error: Runtime exited with error: signal: killed "
                        f"(peak {peak / (1024 * 1024):.1f} MB, past the function's {self.memory_mb} MB)",
                        error_type=OUT_OF_MEMORY,
                    )
            if time.monotonic() > deadline:
                worker.kill()
                raise _named(LAMBDA_UNKNOWN)(
                    f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
                    error_type=TIMED_OUT,
                )
            readable, _, _ = select.select([fd], [], [], POLL_SECONDS)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # the worker is gone
                    status = proc.wait()
                    kind = OUT_OF_MEMORY if status == OUT_OF_MEMORY_EXIT else EXITED
                    if kind == OUT_OF_MEMORY:
                        self.out_of_memory += 1
                    raise _named(LAMBDA_UNKNOWN)(
                        f"RequestId: {request_id} Error: Runtime exited with status {status}", error_type=kind
                    )
                worker.buffer += chunk
                if b"\n" in worker.buffer:
                    line, worker.buffer = worker.buffer.split(b"\n", 1)
                    response: dict[str, Any] = json.loads(line)
                    if response.get("error", {}).get("type") == OUT_OF_MEMORY:
                        self.out_of_memory += 1
                        proc.wait()
                        raise _named(LAMBDA_UNKNOWN)(response["error"]["message"], error_type=OUT_OF_MEMORY)
                    return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for w in workers:
            w.kill()
        self._spawner.stop()
        logger.debug(f"{self.function_name}: environments closed", extra={"coldStarts": self.cold_starts})
