"""logic/consumer.py: what mutation testing (make mutate MODULE=logic.consumer) found untested.

The budget tests bound the deferral delays from above over random draws and run the consumer
against the emulator. Here the delays are pinned exactly (a random source that returns the top of
its range), the deferral count read back from odd bodies, and ``start_compaction`` run with a
catalog, an orchestrator and queues that keep what they were given.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID, uuid4

import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound
from fusou_compaction.catalog.models import Admission, AdmissionPolicy
from fusou_compaction.logic.consumer import Deferral, UnknownDataset, deferrals_of, start_compaction
from fusou_compaction.pipeline.models import CompactionMessage, execution_name_for, run_id_for
from fusou_compaction.ports.messaging import ExecutionAlreadyStarted, OrchestratorThrottled
from fusou_compaction.ports.messaging import Queue as PortQueue

POLICY = AdmissionPolicy(budget=2, reserve=0, max_weight=1, target_bytes=1 << 27)


class Top(random.Random):
    """A random source whose uniform(a, b) is b, and which keeps each range it was asked for."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b


@dataclass
class Queue:
    url: str = "q"
    sent: list[tuple[str, int]] = field(default_factory=list)

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        self.sent.append((body, delay_seconds))
        return str(len(self.sent))


@dataclass
class FakeCatalog:
    known: set[UUID]
    admit: bool = True
    admitted: list[dict[str, Any]] = field(default_factory=list)
    released: list[UUID] = field(default_factory=list)

    def get_dataset(self, dataset_id: UUID) -> object:
        if dataset_id not in self.known:
            raise CatalogNotFound("no such dataset")
        return object()

    def admit_run(self, **kwargs: Any) -> Admission:
        self.admitted.append(kwargs)
        return Admission(admitted=self.admit, weight=1, budget=2)

    def release_admission(self, run_id: UUID) -> bool:
        self.released.append(run_id)
        return True


@dataclass
class Orchestrator:
    error: Exception | None = None
    started: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def start_execution(self, name: str, payload: dict[str, Any]) -> str:
        self.started.append((name, payload))
        if self.error is not None:
            raise self.error
        return f"arn:{name}"


def deferral() -> tuple[Deferral, Queue, Queue]:
    main, low = Queue("main"), Queue("low")
    queues = cast(dict[str, PortQueue], {"manual": main, "realtime": main, "scheduled": low})
    return Deferral(queues, rng=Top()), main, low


@pytest.mark.parametrize(
    ("body", "count"),
    [
        ("{not json", 0),
        ("[1, 2]", 0),  # JSON, but no object: no .get
        ('"text"', 0),
        ("{}", 0),
        ('{"deferrals": 0}', 0),
        ('{"deferrals": 2}', 2),
        ('{"deferrals": -1}', 0),
        ('{"deferrals": "3"}', 0),
    ],
)
def test_the_deferral_count_of_a_body_is_zero_unless_it_holds_a_count(body: str, count: int) -> None:
    # Kills `return 1` for a body that is not JSON or not an object, and the sign/type checks
    assert deferrals_of(body) == count


def test_each_deferral_may_wait_twice_as_long_from_the_base_up_to_sqss_largest_delay() -> None:
    # Given the default deferral (base 5 s, at most 900 s) drawing the top of each range
    d, _, _ = deferral()
    # When the delays of the 1st..9th and the 30th deferral are drawn
    delays = [d.delay_for(n) for n in (1, 2, 3, 4, 8, 9, 30)]
    # Then they are 5 · 2^(n-1), capped at 900, each drawn from 0 up (kills any change of the base,
    # the exponent, the cap or the lower bound)
    assert delays == [5, 10, 20, 40, 640, 900, 900]
    assert all(a == 0 for a, _ in cast(Top, d.rng).ranges)
    assert (d.base_seconds, d.max_seconds) == (5, 900)


def test_a_deferred_copy_counts_one_more_and_waits_in_its_prioritys_queue() -> None:
    # Given a scheduled message deferred twice already
    d, main, low = deferral()
    message = CompactionMessage(dataset_id=uuid4(), priority="scheduled")
    body = json.dumps({"datasetId": str(message.dataset_id), "priority": "scheduled", "deferrals": 2})
    # When it is deferred again
    delay = d.defer(message, body)
    # Then a copy saying 3 waits in the low-priority queue for the 3rd deferral's delay (20 s)
    assert (main.sent, low.sent) == ([], [(json.dumps({**json.loads(body), "deferrals": 3}), 20)])
    assert delay == 20


def start(
    catalog: FakeCatalog, orchestrator: Orchestrator, message: CompactionMessage, *, budget: bool = False
) -> tuple[str, Queue]:
    d, main, _ = deferral()
    outcome = start_compaction(
        message,
        message_id="msg-1",
        body=message.model_dump_json(by_alias=True),
        catalog=cast(Catalog, catalog),
        orchestrator=orchestrator,
        admission=POLICY if budget else None,
        deferral=d if budget else None,
    )
    return outcome, main


def test_a_message_for_an_unknown_dataset_names_it() -> None:
    message = CompactionMessage(dataset_id=uuid4())
    orchestrator = Orchestrator()
    with pytest.raises(UnknownDataset, match=rf"^unknown dataset {message.dataset_id}$"):
        start(FakeCatalog(set()), orchestrator, message)
    assert orchestrator.started == []


@pytest.mark.parametrize("budget", [False, True])
def test_a_started_run_is_named_and_identified_by_its_message(budget: bool) -> None:
    # Given a known dataset (and a budget that admits the run)
    message = CompactionMessage(dataset_id=uuid4(), priority="manual")
    catalog, orchestrator = FakeCatalog({message.dataset_id}), Orchestrator()
    # When its message starts compaction
    outcome, main = start(catalog, orchestrator, message, budget=budget)
    # Then one execution starts under the message's name, carrying the message, its id, its body
    # and the run id derived from the message id; the budget was asked for that run
    assert outcome == "started" and main.sent == []
    [(name, payload)] = orchestrator.started
    run = run_id_for("msg-1")
    assert name == execution_name_for(message.dataset_id, "msg-1")
    execution = payload["execution"]
    assert set(payload) == {"execution"}
    assert (execution["messageId"], execution["runId"], execution["executionName"]) == ("msg-1", str(run), name)
    assert execution["body"] == message.model_dump_json(by_alias=True)
    assert execution["message"]["datasetId"] == str(message.dataset_id)
    if budget:
        assert catalog.admitted == [
            {"run_id": run, "dataset_id": message.dataset_id, "priority": "manual", "policy": POLICY}
        ]


def test_a_refused_run_is_deferred_and_not_started() -> None:
    message = CompactionMessage(dataset_id=uuid4())
    catalog, orchestrator = FakeCatalog({message.dataset_id}, admit=False), Orchestrator()
    outcome, main = start(catalog, orchestrator, message, budget=True)
    assert outcome == "deferred" and orchestrator.started == [] and len(main.sent) == 1


def test_a_second_start_of_the_same_message_is_a_duplicate() -> None:
    message = CompactionMessage(dataset_id=uuid4())
    orchestrator = Orchestrator(error=ExecutionAlreadyStarted("exists"))
    assert start(FakeCatalog({message.dataset_id}), orchestrator, message)[0] == "duplicate"


def test_a_throttled_start_without_a_budget_raises_and_with_one_gives_the_weight_back() -> None:
    message = CompactionMessage(dataset_id=uuid4())
    catalog = FakeCatalog({message.dataset_id})
    # Without a budget, the throttling reaches the caller (the message is received again)
    with pytest.raises(OrchestratorThrottled):
        start(catalog, Orchestrator(error=OrchestratorThrottled("Rate exceeded")), message)
    assert catalog.released == []
    # With one, the run's weight is released and the message deferred
    outcome, main = start(catalog, Orchestrator(error=OrchestratorThrottled("Rate exceeded")), message, budget=True)
    assert outcome == "deferred" and catalog.released == [run_id_for("msg-1")] and len(main.sent) == 1


def test_a_throttled_start_with_a_deferral_but_no_budget_still_raises() -> None:
    # Given somewhere to defer but no budget (nothing was admitted), When the start is throttled
    message = CompactionMessage(dataset_id=uuid4())
    catalog, (d, main, _) = FakeCatalog({message.dataset_id}), deferral()
    with pytest.raises(OrchestratorThrottled):
        start_compaction(
            message,
            message_id="msg-1",
            body=message.model_dump_json(by_alias=True),
            catalog=cast(Catalog, catalog),
            orchestrator=Orchestrator(error=OrchestratorThrottled("Rate exceeded")),
            deferral=d,
        )
    # Then no weight is released and nothing deferred (kills `admission is not None or deferral ...`)
    assert catalog.released == [] and main.sent == []


def test_a_budget_without_a_deferral_is_a_programming_error_that_says_so() -> None:
    message = CompactionMessage(dataset_id=uuid4())
    with pytest.raises(AssertionError, match=r"^a budget needs somewhere for refused messages to wait$"):
        start_compaction(
            message,
            message_id="msg-1",
            body=message.model_dump_json(by_alias=True),
            catalog=cast(Catalog, FakeCatalog({message.dataset_id})),
            orchestrator=Orchestrator(),
            admission=POLICY,
        )
