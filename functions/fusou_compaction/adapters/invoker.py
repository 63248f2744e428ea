"""Lambda adapter of the Invoker port: asynchronous invocations (the scheduled run's continuation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class LambdaInvoker:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory  # the client is built on first use: only one function invokes
        self._client: Any = None

    def invoke_async(self, function: str, event: dict[str, Any]) -> None:
        if self._client is None:
            self._client = self._factory()
        self._client.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode())
