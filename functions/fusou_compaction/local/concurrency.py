"""Lambda's concurrency limit, locally: a function's reserved concurrency as a stand-in enforces it.

An invocation past the limit is refused at once with Lambda's error name
(``Lambda.TooManyRequestsException``), which the state machine's throttle retrier matches, exactly
as a throttled Invoke from Step Functions is. Nothing waits inside the stand-in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class TooManyRequests(Exception):
    error_name = "Lambda.TooManyRequestsException"


class ReservedConcurrency:
    def __init__(self, handler: Callable[[dict[str, Any], Any], Any], limit: int, *, name: str) -> None:
        self.handler = handler
        self.limit = limit
        self.name = name
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.throttles = 0
        self.invocations = 0

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            if self.in_flight >= self.limit:
                self.throttles += 1
                raise TooManyRequests(f"Rate Exceeded: {self.name} is at its reserved concurrency ({self.limit})")
            self.in_flight += 1
            self.invocations += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return self.handler(event, context)
        finally:
            with self._lock:
                self.in_flight -= 1


class AccountConcurrency:
    """The account's unreserved concurrency, locally: every function it wraps draws on one pool, as
    an account's functions without reserved concurrency share what the reserved ones leave of its
    concurrent executions (default 1,000 a Region).

    Past the limit, an invocation is refused at once with ``Lambda.TooManyRequestsException``,
    whichever function it is for, so the scale test sees throttling where AWS would put it: on
    Validate, GetMetadata, Update and RecordFailure, not only on Compact's reserved share.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.throttles = 0
        self.invocations = 0

    def wrap(self, handler: Callable[[dict[str, Any], Any], Any], name: str) -> Callable[[dict[str, Any], Any], Any]:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            with self._lock:
                if self.in_flight >= self.limit:
                    self.throttles += 1
                    raise TooManyRequests(f"Rate Exceeded: the unreserved concurrency ({self.limit}) is in use; {name}")
                self.in_flight += 1
                self.invocations += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                return handler(event, context)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return invoke
