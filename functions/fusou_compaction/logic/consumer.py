"""Queue consumer logic: one message → one state machine execution, never two, within the budget.

The budget (catalog ``admit_run``, migration 0009) bounds the Compact invocations of every run in
flight. A message it refuses waits in its priority's queue: it is sent again with a jittered,
growing delay and this receive succeeds, so waiting never counts towards the DLQ's three receives.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound
from fusou_compaction.catalog.models import AdmissionPolicy
from fusou_compaction.pipeline.models import CompactionMessage, ExecutionInput, execution_name_for, run_id_for
from fusou_compaction.ports.messaging import ExecutionAlreadyStarted, Orchestrator, OrchestratorThrottled, Queue

Outcome = Literal["started", "duplicate", "deferred"]
# Carried in a deferred copy of the body (extra fields are ignored by every reader of the body).
DEFERRALS_FIELD = "deferrals"


class UnknownDataset(Exception):
    """The message names a dataset the catalog does not know; it will end in the DLQ."""


def deferrals_of(body: str) -> int:
    try:
        n = json.loads(body).get(DEFERRALS_FIELD, 0)
    except (ValueError, AttributeError):
        return 0
    return n if isinstance(n, int) and n >= 0 else 0


@dataclass
class Deferral:
    """Where refused messages wait: the queue of their priority (scheduled work in the
    low-priority queue, whatever queue it came from), with full-jitter exponential delays."""

    queues: Mapping[str, Queue]  # priority -> queue
    base_seconds: int = 5
    max_seconds: int = 900  # SQS's largest DelaySeconds
    rng: random.Random = field(default_factory=random.Random)

    def delay_for(self, deferrals: int) -> int:
        cap = min(self.max_seconds, self.base_seconds * 2 ** min(deferrals - 1, 20))
        return int(self.rng.uniform(0, cap))

    def defer(self, message: CompactionMessage, body: str) -> int:
        n = deferrals_of(body) + 1
        document = json.loads(body)
        document[DEFERRALS_FIELD] = n
        delay = self.delay_for(n)
        self.queues[message.priority].send(json.dumps(document), delay_seconds=delay)
        return delay


def start_compaction(
    message: CompactionMessage,
    *,
    message_id: str,
    body: str,
    catalog: Catalog,
    orchestrator: Orchestrator,
    admission: AdmissionPolicy | None = None,
    deferral: Deferral | None = None,
) -> Outcome:
    try:
        catalog.get_dataset(message.dataset_id)
    except CatalogNotFound as exc:
        raise UnknownDataset(f"unknown dataset {message.dataset_id}") from exc
    execution = ExecutionInput(
        message=message,
        message_id=message_id,
        body=body,
        run_id=run_id_for(message_id),
        execution_name=execution_name_for(message.dataset_id, message_id),
    )
    if admission is not None:
        assert deferral is not None, "a budget needs somewhere for refused messages to wait"
        admitted = catalog.admit_run(
            run_id=execution.run_id, dataset_id=message.dataset_id, priority=message.priority, policy=admission
        )
        if not admitted.admitted:
            deferral.defer(message, body)
            return "deferred"
    try:
        orchestrator.start_execution(execution.execution_name, {"execution": execution.to_json_dict()})
    except ExecutionAlreadyStarted:
        return "duplicate"
    except OrchestratorThrottled:
        # Certainly not started: give the weight back and wait like any refused message.
        if admission is not None and deferral is not None:
            catalog.release_admission(execution.run_id)
            deferral.defer(message, body)
            return "deferred"
        raise
    return "started"
