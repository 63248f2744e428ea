"""logic/redrive.py: what mutation testing (make mutate MODULE=logic.redrive) found untested.

The route tests redrive through moto's SQS, which returns every message asked for and never fails a
send. Here the DLQ is a stand-in that behaves as SQS may (fewer messages than asked for, the
request clamped to 1..10 as SqsQueue does, a received message invisible until its timeout) and
the main queue refuses chosen bodies, so the bound on messages handled, the counts and the
reported errors are pinned. Recorded failures live in a real catalog (PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.logic.redrive import MAX_REDRIVE, REDRIVE_VISIBILITY_SECONDS, redrive, redrive_all
from fusou_compaction.ports.messaging import BatchEntry, BatchSendResult, QueueDepth, ReceivedMessage

from .conftest import Api, call, sample_event
from .test_routes import body_of


@dataclass
class Dlq:
    """A DLQ as SqsQueue sees SQS: at most ``per_receive`` messages a call (SQS may return fewer
    than asked), the count asked clamped to 1..10, a received message in flight until deleted."""

    bodies: list[str]
    per_receive: int = 10
    url: str = "dlq"
    visible: list[ReceivedMessage] = field(default_factory=list)
    in_flight: dict[str, ReceivedMessage] = field(default_factory=dict)
    receives: list[tuple[int, int, int | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.visible = [ReceivedMessage(f"m{i}", f"r{i}", b, {}) for i, b in enumerate(self.bodies, 1)]

    def receive(
        self, max_messages: int, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        self.receives.append((max_messages, wait_seconds, visibility_timeout))
        n = min(max(1, min(max_messages, 10)), self.per_receive)
        got, self.visible = self.visible[:n], self.visible[n:]
        self.in_flight.update({m.receipt_handle: m for m in got})
        return got

    def delete(self, receipt_handle: str) -> None:
        del self.in_flight[receipt_handle]

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        raise NotImplementedError

    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult:
        raise NotImplementedError

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        raise NotImplementedError

    def depth(self) -> QueueDepth:
        return QueueDepth(len(self.visible), len(self.in_flight), None)


@dataclass
class MainQueue:
    """The main queue; a send of a body containing one of ``refuse`` fails."""

    refuse: tuple[str, ...] = ()
    url: str = "main"
    sent: list[str] = field(default_factory=list)

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        if any(r in body for r in self.refuse):
            raise RuntimeError("boom")
        self.sent.append(body)
        return f"sent-{len(self.sent)}"

    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult:
        raise NotImplementedError

    def receive(
        self, max_messages: int, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        raise NotImplementedError

    def delete(self, receipt_handle: str) -> None:
        raise NotImplementedError

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        raise NotImplementedError

    def depth(self) -> QueueDepth:
        raise NotImplementedError


def messages(n: int) -> list[str]:
    return [json.dumps({"datasetId": str(uuid4()), "n": i}) for i in range(1, n + 1)]


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    c = Catalog(PostgresRpc(database_url, max_size=2))
    yield c
    c.close()


def record(catalog: Catalog, n: int) -> list[str]:
    """``n`` recorded (acknowledged) failures, oldest first; returns their bodies."""
    bodies = []
    for _ in range(n):
        dataset = uuid4()
        body = json.dumps({"datasetId": str(dataset), "priority": "manual"})
        catalog.record_failure(
            source="dlq", error="Compact failed", message_id=f"m-{uuid4()}", dataset_id=dataset, body=body
        )
        bodies.append(body)
    return bodies


# -- redrive: the DLQ only ----------------------------------------------------------------------


def test_the_largest_redrive_is_allowed_and_a_larger_one_says_the_bounds() -> None:
    # Given an empty DLQ
    # When an operator redrives the most allowed (100), Then nothing is refused (kills `<` for `<=`)
    assert redrive(Dlq([]), MainQueue(), max_messages=MAX_REDRIVE).moved == 0
    # And when 0 or 101, Then the error names the bounds (kills ValueError(None))
    for n in (0, MAX_REDRIVE + 1):
        with pytest.raises(ValueError, match=r"^max_messages must be between 1 and 100$"):
            redrive(Dlq([]), MainQueue(), max_messages=n)


def test_the_dlq_is_read_without_waiting_and_hides_what_it_took_for_the_redrive_timeout() -> None:
    # Given two DLQ messages
    dlq = Dlq(messages(2))
    # When redriven
    redrive(dlq, MainQueue(), max_messages=5)
    # Then every receive is a short poll (no wait: an empty DLQ answers at once) hiding what it took
    # for REDRIVE_VISIBILITY_SECONDS, so a message whose send failed is back in 30 s, not after
    # the DLQ's own timeout (kills wait_seconds 1 / dropped, visibility_timeout None / dropped)
    assert dlq.receives == [(5, 0, REDRIVE_VISIBILITY_SECONDS), (3, 0, REDRIVE_VISIBILITY_SECONDS)]
    assert REDRIVE_VISIBILITY_SECONDS == 30


def test_a_failed_send_counts_towards_the_bound_and_the_next_message_is_still_sent() -> None:
    # Given five DLQ messages, returned two at a time, and a main queue that refuses the first
    bodies = messages(5)
    dlq, queue = Dlq(bodies, per_receive=2), MainQueue(refuse=('"n": 1}',))
    # When at most three are redriven
    report = redrive(dlq, queue, max_messages=3)
    # Then three are handled: the first fails (and stays in the DLQ, in flight), the next two move;
    # the second receive asks for one only (kills `want` computed as max - moved + failed or
    # max + moved - failed), the message after a failure in the same batch is still sent (kills
    # `break` for `continue`), and the error names the message (kills errors.append(None))
    assert (report.moved, report.failed) == (2, 1)
    assert queue.sent == bodies[1:3]
    assert report.errors == ["m1: boom"]
    assert [r[0] for r in dlq.receives] == [3, 1]
    assert dlq.depth() == QueueDepth(2, 1, None)


def test_failures_alone_end_the_redrive_at_the_bound() -> None:
    # Given five DLQ messages and a main queue that refuses every one
    dlq, queue = Dlq(messages(5)), MainQueue(refuse=("datasetId",))
    # When at most two are redriven
    report = redrive(dlq, queue, max_messages=2)
    # Then two failed and the other three are untouched, still visible: the loop ends on
    # moved + failed (kills `moved - failed`, which keeps receiving, hiding the rest unsent) and
    # each failure counts (kills `failed = 1`)
    assert (report.moved, report.failed, len(report.errors)) == (0, 2, 2)
    assert dlq.depth() == QueueDepth(3, 2, None)
    assert len(dlq.receives) == 1


def test_the_api_redrives_the_largest_count_it_accepts(api: Api) -> None:
    # Given one DLQ message, When an admin redrives with max 100 (the API's own upper bound)
    api.deps.dlq.send(json.dumps({"datasetId": str(uuid4())}))
    response = call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": MAX_REDRIVE}))
    # Then it moves (the logic accepts what the API accepts: kills `max_messages < MAX_REDRIVE`)
    assert response["statusCode"] == 200, response
    assert body_of(response) == {"moved": 1, "failed": 0}


# -- redrive_all: the DLQ, then the recorded failures ---------------------------------------------


def redrivable(catalog: Catalog) -> int:
    return len(catalog.list_redrivable_failures(100))


def test_recorded_failures_fill_the_bound_and_are_counted_as_such(catalog: Catalog) -> None:
    # Given an empty DLQ and three recorded failures
    bodies = record(catalog, 3)
    queue = MainQueue()
    # When at most two are redriven
    report = redrive_all(Dlq([]), queue, catalog, max_messages=2)
    # Then the two oldest records are sent and counted as from the records (kills the limit None,
    # which the catalog reads as 1, and `from_records -= `); the third is still redrivable
    assert queue.sent == bodies[:2]
    assert (report.moved, report.failed, report.from_records) == (2, 0, 2)
    assert redrivable(catalog) == 1


def test_records_get_only_the_budget_the_dlq_left(catalog: Catalog) -> None:
    # Given one DLQ message and two recorded failures
    [dlq_body] = messages(1)
    bodies = record(catalog, 2)
    queue = MainQueue()
    # When at most two are redriven
    report = redrive_all(Dlq([dlq_body]), queue, catalog, max_messages=2)
    # Then the DLQ message and the oldest record are sent: a budget of one is still used (kills
    # `budget <= 1`) and the moved message is subtracted from it (kills `max + moved - failed`)
    assert queue.sent == [dlq_body, bodies[0]]
    assert (report.moved, report.from_records) == (2, 1)
    assert redrivable(catalog) == 1


def test_a_dlq_that_used_the_whole_budget_leaves_the_records_alone(catalog: Catalog) -> None:
    # Given one DLQ message and one recorded failure
    [dlq_body] = messages(1)
    record(catalog, 1)
    queue = MainQueue()
    # When at most one is redriven
    report = redrive_all(Dlq([dlq_body]), queue, catalog, max_messages=1)
    # Then only the DLQ message is sent: a budget of 0 asks the catalog for nothing (it reads a
    # limit below 1 as 1: kills `budget < 0`)
    assert queue.sent == [dlq_body]
    assert (report.moved, report.from_records) == (1, 0)
    assert redrivable(catalog) == 1


def test_a_record_that_cannot_be_sent_is_counted_kept_and_the_next_one_still_goes(catalog: Catalog) -> None:
    # Given a DLQ message and the oldest of three records that the main queue refuses
    refused_dataset = str(uuid4())
    dlq_body = json.dumps({"datasetId": refused_dataset})
    bodies = record(catalog, 3)
    first_id = catalog.list_redrivable_failures(1)[0].id
    queue = MainQueue(refuse=(refused_dataset, json.loads(bodies[0])["datasetId"]))
    # When at most three are redriven
    report = redrive_all(Dlq([dlq_body]), queue, catalog, max_messages=3)
    # Then the failed DLQ message uses one of the budget (kills `max - moved + failed`, which would
    # send the third record too), the failed record counts once more (kills `failed = 1`, `-= 1`,
    # `+= 2`), the next record is still sent (kills `break`), and each error is named (kills
    # errors.append(None))
    assert queue.sent == [bodies[1]]
    assert (report.moved, report.failed, report.from_records) == (1, 2, 1)
    assert report.errors == ["m1: boom", f"failure {first_id}: boom"]
    assert [f.body for f in catalog.list_redrivable_failures(10)] == [bodies[0], bodies[2]]


def test_redrive_reports_no_records_when_the_dlq_alone_was_redriven() -> None:
    # The DLQ-only redrive never touches from_records (so `from_records = len(sent)` in redrive_all
    # is equivalent: it adds to 0)
    report = redrive(Dlq(messages(2)), MainQueue(), max_messages=2)
    assert (report.moved, report.from_records) == (2, 0)
