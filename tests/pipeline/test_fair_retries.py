"""Fair retries measured on the local stack: broken datasets back off and never starve good ones.

Rounds are claims of up to 10 pending datasets, enqueued as an operator's `trigger-scheduled` does
(the daily run drains every pending dataset, in the same order), each waited out before the next.
Run with ``-s`` to see the per-round figures.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from fusou_compaction.catalog.models import RetryBackoff, Run
from fusou_compaction.local.stack import LocalStack, StackOptions
from fusou_compaction.logic.scheduled import claim_and_enqueue
from fusou_compaction.ports.object_store import ObjectStoreError

from .conftest import upload_fragments, wait_for

CLAIM_LIMIT = 10
BACKOFF = RetryBackoff(base_seconds=3, max_seconds=60)


@pytest.fixture(scope="module")
def fair_stack() -> Iterator[LocalStack]:
    options = StackOptions(
        serve_api=False,
        run_daily_schedule=False,
        step_time_scale=0.001,
        scheduled_claim_limit=CLAIM_LIMIT,
        retry_backoff_base_seconds=BACKOFF.base_seconds,
        retry_backoff_max_seconds=BACKOFF.max_seconds,
    )
    with LocalStack(options) as s:
        yield s


@dataclass
class Round:
    number: int
    enqueued: list[UUID]
    seconds: float = 0.0
    good_done: int = 0  # good datasets compacted by the end of this round
    broken_claimed: list[UUID] = field(default_factory=list)


def break_compact_of(stack: LocalStack, datasets: set[UUID]) -> None:
    """Every Compact invocation for these datasets fails as an S3 outage does."""
    assert stack.sfn is not None
    handlers = stack.sfn.runner.handlers
    compact = handlers["compact"]

    def failing(event: dict[str, Any], context: Any) -> Any:
        if UUID(event["datasetId"]) in datasets:
            raise ObjectStoreError("SlowDown: please reduce your request rate")
        return compact(event, context)

    handlers["compact"] = failing


def runs(stack: LocalStack, dataset: UUID) -> list[Run]:
    assert stack.deps is not None
    return stack.deps.catalog.dataset_status(dataset, runs=100).runs


def run_round(stack: LocalStack, number: int, counts: dict[UUID, int]) -> Round:
    """One claim of up to CLAIM_LIMIT datasets, waited until every run it started has ended."""
    assert stack.deps is not None
    started = time.monotonic()
    report = claim_and_enqueue(
        stack.deps.catalog,
        stack.deps.queue,
        limit=CLAIM_LIMIT,
        claimer=f"round-{number}",
        claim_seconds=3600,
        backoff=BACKOFF,
        priority="scheduled",
    )
    r = Round(number, list(report.enqueued))

    def ended() -> bool:
        return all(
            len(rs := runs(stack, d)) > counts[d] and rs[0].status not in ("queued", "running") for d in r.enqueued
        )

    wait_for(ended, timeout=120, every=0.1)
    for d in r.enqueued:
        counts[d] = len(runs(stack, d))
    r.seconds = time.monotonic() - started
    return r


def test_broken_datasets_back_off_and_every_good_one_compacts_within_six_rounds(fair_stack: LocalStack) -> None:
    deps = fair_stack.deps
    assert deps is not None
    # Given 5 broken datasets (S3 fails every read of their objects: a transient error, retried by
    # the state machine, then the run fails; it never quarantines anything), pending longer than 50
    # good ones, so the oldest-first order alone would put them first
    broken = [
        upload_fragments(deps.catalog, deps.store, tables=("battle",), fragments=1, rows=20, seed=900 + i).dataset
        for i in range(5)
    ]
    good = [
        upload_fragments(deps.catalog, deps.store, tables=("battle",), fragments=1, rows=20, seed=i).dataset
        for i in range(50)
    ]
    break_compact_of(fair_stack, set(broken))
    counts = dict.fromkeys(broken + good, 0)

    # When scheduled runs with a claim limit of 10 follow one another until every good dataset is
    # compacted and every broken one has failed three times
    rounds: list[Round] = []
    t0 = time.monotonic()
    while True:
        r = run_round(fair_stack, len(rounds) + 1, counts)
        r.good_done = sum(1 for d in good if deps.catalog.get_dataset(d).live_fragments == 0)
        r.broken_claimed = [d for d in r.enqueued if d in broken]
        rounds.append(r)
        if r.good_done == len(good) and all(counts[d] >= 3 for d in broken):
            break
        assert time.monotonic() - t0 < 300, "the broken datasets were not retried"
        if not r.enqueued:
            time.sleep(0.25)  # nothing due: wait a little, as the next trigger would come later

    print(f"\nfair retries: {len(broken)} broken + {len(good)} good, claim limit {CLAIM_LIMIT}, backoff {BACKOFF}")
    for r in rounds:
        if r.enqueued:
            print(
                f"  round {r.number:2d}: claimed {len(r.enqueued):2d} "
                f"(broken {len(r.broken_claimed)}), good compacted so far {r.good_done:2d}/50, {r.seconds:.1f}s"
            )

    # Then every good dataset is compacted within the first six rounds
    first_all_good = next(r.number for r in rounds if r.good_done == len(good))
    assert first_all_good <= 6, [(r.number, r.good_done) for r in rounds]
    # And after the first failures, no round claimed a broken dataset while a good one waited
    for r in rounds[1:first_all_good]:
        waiting_good = len(good) - rounds[r.number - 2].good_done
        assert len(r.enqueued) - len(r.broken_claimed) == min(CLAIM_LIMIT, waiting_good)
    # And each broken dataset was retried at its backoff: never before min(base * 2^(n-1), max) after
    # its n-th failure in a row, and soon after (the rounds follow one another)
    for d in broken:
        history = sorted(runs(fair_stack, d), key=lambda run: run.created_at)
        assert [run.status for run in history] == ["failed"] * len(history) and len(history) >= 3
        for n, (prev, nxt) in enumerate(itertools.pairwise(history), start=1):
            assert isinstance(prev.finished_at, datetime)
            waited = (nxt.created_at - prev.finished_at).total_seconds()
            assert waited >= BACKOFF.delay_seconds(n) - 0.05, (n, waited)
    # And the last retries came within a few seconds of being due (the good ones were all done by then)
    for d in broken:
        history = sorted(runs(fair_stack, d), key=lambda run: run.created_at)
        prev, nxt = history[-2], history[-1]
        assert isinstance(prev.finished_at, datetime)
        due = BACKOFF.delay_seconds(len(history) - 1)
        assert (nxt.created_at - prev.finished_at).total_seconds() <= due + 10
    assert deps.catalog.get_dataset(broken[0]).consecutive_failures == len(runs(fair_stack, broken[0]))
