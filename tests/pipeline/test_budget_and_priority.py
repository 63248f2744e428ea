"""Scale (issue 19, items 1-3): the daily run drains the backlog; a global budget bounds Compact
invocations; manual and realtime work starts ahead of scheduled work; throttling never fails a run."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from fusou_compaction.adapters.local_store import LocalObjectStore
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import AdmissionPolicy
from fusou_compaction.local.concurrency import ReservedConcurrency, TooManyRequests
from fusou_compaction.local.runner import Execution, LocalRunner
from fusou_compaction.local.stack import LocalStack, StackOptions, scheduled_event
from fusou_compaction.logic.consumer import Deferral, deferrals_of, start_compaction
from fusou_compaction.logic.scheduled import drain_backlog
from fusou_compaction.pipeline.definition import THROTTLE_RETRY, build_pipeline
from fusou_compaction.pipeline.models import CompactionMessage
from fusou_compaction.ports.messaging import OrchestratorThrottled

from .conftest import pending, seed_body, upload_fragments, wait_for

POLICY = AdmissionPolicy(budget=3, reserve=1, max_weight=8, target_bytes=128 * 1024 * 1024)


def drain_queue(queue: SqsQueue) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    while got := queue.receive(10):
        for m in got:
            bodies.append(json.loads(m.body))
            queue.delete(m.receipt_handle)
    return bodies


# Item 1: the backlog is drained ------------------------------------------------------------------
def test_a_drain_claims_every_pending_dataset_in_pages_in_claim_order(
    catalog: Catalog, sql: psycopg.Connection, sqs_client: Any
) -> None:
    # Given 25 pending datasets, oldest first
    ids = pending(sql, 25)
    queue = SqsQueue(sqs_client, sqs_client.create_queue(QueueName=f"drain-{uuid4().hex[:8]}")["QueueUrl"])
    # When the backlog is drained in pages of 10
    report = drain_backlog(
        catalog, queue, claimer="t", claim_seconds=600, time_left=lambda: 900.0, stop_with_seconds_left=60, page_size=10
    )
    # Then every one is enqueued once, as scheduled work, in three pages, oldest first
    assert report.drained and report.pages == 3 and report.enqueued == ids and not report.failed
    bodies = drain_queue(queue)
    assert sorted(b["datasetId"] for b in bodies) == sorted(map(str, ids))
    assert {b["priority"] for b in bodies} == {"scheduled"}


def test_a_drain_stops_when_its_time_runs_out_and_a_second_call_finishes_it(
    catalog: Catalog, sql: psycopg.Connection, sqs_client: Any
) -> None:
    # Given 25 pending datasets and time for two pages only
    ids = pending(sql, 25)
    queue = SqsQueue(sqs_client, sqs_client.create_queue(QueueName=f"drain-{uuid4().hex[:8]}")["QueueUrl"])
    clock = iter([900.0, 800.0, 50.0])
    first = drain_backlog(
        catalog,
        queue,
        claimer="t",
        claim_seconds=600,
        time_left=lambda: next(clock),
        stop_with_seconds_left=60,
        page_size=10,
    )
    # Then the first call enqueues 20 and says it is not done
    assert (len(first.enqueued), first.drained, first.stalled) == (20, False, False)
    # And a second call (the continuation) enqueues the other 5, none twice
    second = drain_backlog(
        catalog, queue, claimer="t", claim_seconds=600, time_left=lambda: 900.0, stop_with_seconds_left=60, page_size=10
    )
    assert second.drained and first.enqueued + second.enqueued == ids


class ShrinkingContext:
    """A Lambda context whose remaining time drops 100 s per look: two pages, then out of time."""

    function_name = "scheduled"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:scheduled"
    memory_limit_in_mb = 256
    aws_request_id = "req"
    function_version = "$LATEST"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        self.seconds -= 100
        return int(self.seconds * 1000)


@pytest.fixture(scope="module")
def paged_stack() -> Iterator[LocalStack]:
    options = StackOptions(
        serve_api=False, run_daily_schedule=False, step_time_scale=0.001, scheduled_page_size=5, compaction_budget=3
    )
    with LocalStack(options) as s:
        yield s


def test_the_daily_run_continues_in_an_asynchronous_invocation_of_itself_and_every_dataset_compacts(
    paged_stack: LocalStack,
) -> None:
    from fusou_compaction.handlers import scheduled as scheduled_handler

    deps = paged_stack.deps
    assert deps is not None
    # Given 14 pending datasets and a daily run with time for two pages of 5 before its reserve
    datasets = [
        upload_fragments(deps.catalog, deps.store, tables=("battle",), fragments=2, rows=10, seed=i).dataset
        for i in range(14)
    ]
    first = scheduled_handler.handler(scheduled_event(), ShrinkingContext(240 + 250))
    # Then it enqueued 10, and continued itself asynchronously
    assert (len(first["enqueued"]), first["drained"], first["continued"]) == (10, False, True)
    # And the continuation enqueued the other 4 and stopped
    sequel = wait_for(lambda: paged_stack.scheduled_sequels and paged_stack.scheduled_sequels[0], timeout=30)
    assert (len(sequel["enqueued"]), sequel["drained"], sequel["continuation"], sequel["continued"]) == (
        4,
        True,
        1,
        False,
    )
    assert sorted(map(UUID, first["enqueued"] + sequel["enqueued"])) == sorted(datasets)
    # And every dataset compacts, with nothing in the DLQ
    wait_for(lambda: all(deps.catalog.get_dataset(d).live_fragments == 0 for d in datasets), timeout=90)
    assert deps.dlq.depth().visible == 0


# Item 2: the global budget ------------------------------------------------------------------------
def test_admission_holds_each_runs_weight_until_its_run_ends_and_leaves_the_reserve_to_manual_work(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    ds = pending(sql, 5)
    runs = [uuid4() for _ in ds]
    # Given a budget of 3 with 1 reserved: two scheduled runs are admitted, the third is refused
    got = [
        catalog.admit_run(run_id=r, dataset_id=d, priority="scheduled", policy=POLICY)
        for r, d in zip(runs, ds, strict=True)
    ]
    assert [a.admitted for a in got] == [True, True, False, False, False]
    # And a manual run takes the reserve; the next manual one is refused (the budget is full)
    assert catalog.admit_run(run_id=uuid4(), dataset_id=ds[2], priority="manual", policy=POLICY).admitted
    assert not catalog.admit_run(run_id=uuid4(), dataset_id=ds[3], priority="manual", policy=POLICY).admitted
    # And an admission is idempotent on its run id
    assert catalog.admit_run(run_id=runs[0], dataset_id=ds[0], priority="scheduled", policy=POLICY).admitted
    # When the first run ends (its row is terminal)
    sql.execute(
        "INSERT INTO compaction_runs (id, dataset_id, trigger, status) VALUES (%s, %s, 'scheduled', 'succeeded')",
        (runs[0], ds[0]),
    )
    # Then its weight is free again, but only for manual work until another frees (2 of 3 held)
    assert not catalog.admit_run(run_id=runs[3], dataset_id=ds[3], priority="scheduled", policy=POLICY).admitted
    assert catalog.admit_run(run_id=uuid4(), dataset_id=ds[3], priority="manual", policy=POLICY).admitted
    assert catalog.admission_status()["weight"] == 3


def test_a_run_that_never_started_or_whose_lease_expired_frees_its_weight(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    ds = pending(sql, 3)
    policy = AdmissionPolicy(budget=2, reserve=0, max_weight=8, target_bytes=1 << 27, stale_seconds=60)
    a, b = uuid4(), uuid4()
    assert catalog.admit_run(run_id=a, dataset_id=ds[0], priority="manual", policy=policy).admitted
    assert catalog.admit_run(run_id=b, dataset_id=ds[1], priority="manual", policy=policy).admitted
    assert not catalog.admit_run(run_id=uuid4(), dataset_id=ds[2], priority="manual", policy=policy).admitted
    # Given run a never showed up (admitted 61 s ago), and run b is running with an expired lease
    sql.execute("UPDATE compaction_admissions SET admitted_at = now() - interval '61 s' WHERE run_id = %s", (a,))
    sql.execute(
        "INSERT INTO compaction_runs (id, dataset_id, trigger, status) VALUES (%s, %s, 'manual', 'running')", (b, ds[1])
    )
    sql.execute(
        "UPDATE datasets SET lease_owner = %s, lease_expires_at = now() - interval '1 s' WHERE id = %s", (b, ds[1])
    )
    # Then both weights are free
    assert catalog.admit_run(run_id=uuid4(), dataset_id=ds[2], priority="manual", policy=policy).admitted
    assert catalog.admit_run(run_id=uuid4(), dataset_id=ds[0], priority="manual", policy=policy).admitted
    # And only the two new admissions are held (the others were let go for good)
    assert catalog.admission_status(stale_seconds=60) == {"runs": 2, "weight": 2, "scheduled_weight": 0}


def test_a_runs_weight_is_the_bins_its_compactable_bytes_make_up_to_the_maps_concurrency(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    (d,) = pending(sql, 1)
    mib = 1 << 20
    for i, size in enumerate([3 * mib, 3 * mib, 40 * mib]):
        kind = "compacted" if size == 40 * mib else "fragment"
        sql.execute(
            "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,"
            " schema_fingerprint) VALUES (%s, 'battle', %s, %s, %s, 1, %s, 'fp')",
            (d, kind, f"datasets/{d}/battle/x/{i}", size, f"{i:064x}"),
        )
    # 6 MiB of fragments, and one compacted file at the target (not compacted again): 6 // 2 + 1 table = 4 bins
    policy = AdmissionPolicy(budget=100, reserve=0, max_weight=8, target_bytes=2 * mib)
    assert catalog.admit_run(run_id=uuid4(), dataset_id=d, priority="manual", policy=policy).weight == 4
    capped = AdmissionPolicy(budget=100, reserve=0, max_weight=3, target_bytes=2 * mib)
    assert catalog.admit_run(run_id=uuid4(), dataset_id=d, priority="manual", policy=capped).weight == 3


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.url = "recorder"

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        self.sent.append((body, delay_seconds))
        return str(len(self.sent))


class ThrottledOrchestrator:
    def start_execution(self, name: str, payload: dict[str, Any]) -> str:
        raise OrchestratorThrottled("Rate exceeded")


def test_a_refused_or_throttled_message_is_sent_again_to_its_prioritys_queue_with_growing_jittered_delays(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    main, low = Recorder(), Recorder()
    deferral = Deferral({"manual": main, "realtime": main, "scheduled": low}, base_seconds=5, max_seconds=900)
    deferral.rng = random.Random(1)
    ds = pending(sql, 1)[0]
    tight = AdmissionPolicy(budget=1, reserve=0, max_weight=1, target_bytes=1 << 27)
    assert catalog.admit_run(run_id=uuid4(), dataset_id=ds, priority="manual", policy=tight).admitted
    # Given the budget is full, when a scheduled message arrives (on whichever queue)
    body = seed_body(ds, "scheduled")
    message = CompactionMessage.model_validate_json(body)
    outcome = start_compaction(
        message, message_id="m1", body=body, catalog=catalog, orchestrator=ThrottledOrchestrator(),
        admission=tight, deferral=deferral,
    )  # fmt: skip
    # Then it succeeds as deferred: a copy waits in the low-priority queue, its count in the body
    assert outcome == "deferred" and not main.sent
    (copy, delay), = low.sent  # fmt: skip
    assert json.loads(copy) == {**json.loads(body), "deferrals": 1} and 0 <= delay <= 5
    # And each deferral may wait twice as long, up to SQS's 900 s
    assert max(deferral.delay_for(n) for n in [4] * 50) <= 40
    assert max(deferral.delay_for(30) for _ in range(50)) <= 900 and deferrals_of(copy) == 1
    # And a throttled StartExecution gives its weight back and defers too
    sql.execute("DELETE FROM compaction_admissions")
    body2 = seed_body(ds, "manual")
    outcome = start_compaction(
        CompactionMessage.model_validate_json(body2), message_id="m2", body=body2, catalog=catalog,
        orchestrator=ThrottledOrchestrator(), admission=tight, deferral=deferral,
    )  # fmt: skip
    assert outcome == "deferred" and len(main.sent) == 1
    assert catalog.admission_status()["runs"] == 0


# The state machine waits out Lambda's throttling ----------------------------------------------------
class NullQueue:
    url = "null"

    def send(self, body: str, *, delay_seconds: int = 0) -> str:
        raise AssertionError(f"nothing should reach the DLQ: {body}")


def test_compact_invocations_past_the_reserved_concurrency_are_throttled_and_retried_until_every_bin_ran(
    tmp_path: Path,
) -> None:
    # Given a run of 12 bins, a Map of concurrency 8, and Compact's reserved concurrency of 2
    store = LocalObjectStore(tmp_path)
    store.put("plans/run/items.json", json.dumps(list(range(12))).encode())
    done: list[int] = []
    lock = threading.Lock()

    def compact(event: dict[str, Any], context: Any) -> dict[str, Any]:
        time.sleep(0.02)
        with lock:
            done.append(event["bin"])
        return {"bin": event["bin"]}

    limited = ReservedConcurrency(compact, 2, name="step-compact")
    handlers = {
        "validate": lambda e, c: {"action": "compact"},
        "get_metadata": lambda e, c: {
            "planKey": "plans/run/",
            "itemsKey": "plans/run/items.json",
            "resultsPrefix": "plans/run/results",
        },
        "compact": limited,
        "update": lambda e, c: {"committed": True},
        "record_failure": lambda e, c: {},
    }
    runner = LocalRunner(
        build_pipeline(8),
        handlers,
        NullQueue(),  # type: ignore[arg-type]
        store=store,
        time_scale=0.005,
        rng=random.Random(7),
    )
    message = {"datasetId": str(uuid4()), "priority": "manual"}
    ex = runner.run(Execution("e", {"execution": {"runId": str(uuid4()), "message": message}}))
    # Then the run succeeds, every bin ran once, never more than 2 at a time, after throttles
    assert ex.status == "SUCCEEDED" and sorted(done) == list(range(12))
    assert limited.peak == 2 and limited.throttles > 0
    throttled = [h for h in ex.history if h.error == TooManyRequests.error_name]
    assert len(throttled) == limited.throttles
    # And the throttle retrier is the one that decided (it has attempts to spare)
    assert THROTTLE_RETRY.max_attempts >= 10 and TooManyRequests.error_name in THROTTLE_RETRY.errors


# Items 2 and 3 on the local stack ------------------------------------------------------------------
@pytest.fixture(scope="module")
def budget_stack() -> Iterator[LocalStack]:
    options = StackOptions(
        serve_api=False, run_daily_schedule=False, step_time_scale=0.001, compaction_budget=2, high_priority_reserve=1
    )
    with LocalStack(options) as s:
        yield s


def test_under_a_budget_of_two_every_scheduled_dataset_compacts_with_at_most_two_compacts_at_once_and_none_fails(
    budget_stack: LocalStack,
) -> None:
    deps = budget_stack.deps
    assert deps is not None
    # Given 12 pending datasets
    datasets = [
        upload_fragments(
            deps.catalog, deps.store, tables=("battle", "ship_state"), fragments=2, rows=30, seed=i
        ).dataset
        for i in range(12)
    ]
    # When the daily run drains them into the low-priority queue
    report = budget_stack.run_scheduled()
    assert sorted(map(UUID, report["enqueued"])) == sorted(datasets)
    # Then every one compacts, never more than 2 Compact invocations at once
    wait_for(lambda: all(deps.catalog.get_dataset(d).live_fragments == 0 for d in datasets), timeout=120)
    assert budget_stack.compact_concurrency.peak <= 2
    # And no run failed, nothing reached the DLQ, and the scheduled ones waited (deferred) meanwhile
    runs = [r for d in datasets for r in deps.catalog.dataset_status(d, runs=100).runs]
    assert {r.status for r in runs} <= {"succeeded", "skipped"}
    assert deps.dlq.depth().visible == 0 and not deps.catalog.list_recent_failures()


def test_a_manual_trigger_starts_ahead_of_waiting_scheduled_work(budget_stack: LocalStack) -> None:
    deps = budget_stack.deps
    assert deps is not None and deps.scheduled_queue is not None
    # Given 30 scheduled datasets waiting (budget 2, 1 of it reserved for manual work)
    backlog = [
        upload_fragments(deps.catalog, deps.store, tables=("battle",), fragments=2, rows=30, seed=100 + i).dataset
        for i in range(30)
    ]
    budget_stack.run_scheduled()
    wait_for(lambda: any(deps.catalog.get_dataset(d).live_fragments == 0 for d in backlog), timeout=60)
    # When a manual message arrives
    manual = upload_fragments(deps.catalog, deps.store, tables=("battle",), fragments=2, rows=30, seed=999).dataset
    deps.queue.send(seed_body(manual, "manual"))
    wait_for(lambda: deps.catalog.get_dataset(manual).live_fragments == 0, timeout=60)
    # Then it is compacted while most of the scheduled backlog still waits
    still_waiting = sum(1 for d in backlog if deps.catalog.get_dataset(d).live_fragments > 0)
    assert still_waiting >= 15, still_waiting
    wait_for(lambda: all(deps.catalog.get_dataset(d).live_fragments == 0 for d in backlog), timeout=180)
    assert deps.dlq.depth().visible == 0
