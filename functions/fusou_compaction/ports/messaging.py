"""Ports for the queue, the orchestrator and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class QueueError(Exception):
    """Sending to or reading from a queue failed."""


@dataclass(frozen=True)
class BatchEntry:
    id: str
    body: str


@dataclass(frozen=True)
class BatchSendResult:
    sent: list[str]  # entry ids
    failed: dict[str, str]  # entry id -> reason


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    oldest_age_seconds: int | None


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]


class Queue(Protocol):
    url: str

    def send(self, body: str, *, delay_seconds: int = 0) -> str: ...
    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult: ...
    def receive(
        self, max_messages: int, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]: ...
    def delete(self, receipt_handle: str) -> None: ...
    def change_visibility(self, receipt_handle: str, seconds: int) -> None: ...
    def depth(self) -> QueueDepth: ...


class ExecutionAlreadyStarted(Exception):
    """StartExecution with a name already used: the message was delivered before."""


class OrchestratorThrottled(Exception):
    """StartExecution was throttled even after the SDK's own retries: try again later."""


class Orchestrator(Protocol):
    def start_execution(self, name: str, payload: dict[str, Any]) -> str:
        """Start the state machine; returns the execution id. Idempotent on ``name``."""
        ...


class Invoker(Protocol):
    def invoke_async(self, function: str, event: dict[str, Any]) -> None:
        """Invoke a function asynchronously (Lambda's ``Event`` type): queued, retried by Lambda."""
        ...


class Alerts(Protocol):
    def publish(self, subject: str, message: dict[str, Any]) -> None: ...
