"""Scale on the local stack (issue 19, item 6): many pending datasets, the account's Lambda
concurrency capped so that it throttles as Lambda does, one scheduled trigger → every dataset
compacted, nothing in the DLQ, no run failed.

`make test-scale` runs it with 2,000 datasets (``FUSOU_SCALE_DATASETS``) and prints the figures;
`make test` runs the same test on 100, so the mechanism is guarded on every change.

What is capped, as in an account of 10 concurrent executions: Compact reserves the global budget
(8) of them; Validate, GetMetadata, Update and RecordFailure share the 2 left (AWS's unreserved
pool) and are throttled past it (Lambda.TooManyRequestsException), as they would be with the
budget set close to the account's quota.
Throttled invocations are retried by the state machine's throttle retrier (backoff with full
jitter); the consumer admits no more runs than the budget allows, so most work waits in the queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import psycopg
import pytest

from fusou_compaction.local.stack import LocalStack, StackOptions

from .conftest import upload_fragments, wait_for

DATASETS = int(os.environ.get("FUSOU_SCALE_DATASETS", "100"))
ACCOUNT_CONCURRENCY = 10
BUDGET = 8
# Two tables, a bin each: a run weighs 2 of the budget, so 3 scheduled runs go at once (7 of 8; 1 is
# kept for manual work) and their other steps contend for the 2 unreserved executions.
TABLES, FRAGMENTS, ROWS = ("battle", "hougeki"), 2, 30

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scale_stack() -> Iterator[LocalStack]:
    options = StackOptions(
        serve_api=False,
        run_daily_schedule=False,
        # Retry delays scaled as step times are: a local Compact takes ~0.1 s, a deployed one ~5 s,
        # so the throttle retrier's ~14 min of patience becomes ~17 s here. Scaled further (0.001:
        # 0.8 s) it gave up on throttles a deployed run would have waited out.
        step_time_scale=0.02,
        compaction_budget=BUDGET,
        high_priority_reserve=1,
        account_concurrency=ACCOUNT_CONCURRENCY,
        # Compact runs in this process: a child process per invocation (Lambda's memory held) would
        # measure process start-up 2,000 times, not the pipeline; test_lambda_memory covers that.
        compact_memory_mb=None,
    )
    with LocalStack(options) as s:
        yield s


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        pending = conn.execute("SELECT count(*) FROM datasets WHERE live_fragments > 0").fetchone()
        runs: list[tuple[str, int]] = conn.execute(
            "SELECT status, count(*) FROM compaction_runs GROUP BY status"
        ).fetchall()
    return {"pending": int(pending[0]) if pending else 0, **{k: int(v) for k, v in runs}}


@pytest.mark.timeout(3600)
def test_one_scheduled_trigger_compacts_every_pending_dataset_under_throttling(scale_stack: LocalStack) -> None:
    deps, pg = scale_stack.deps, scale_stack.pg
    assert deps is not None and pg is not None and scale_stack.account_concurrency is not None

    # Given DATASETS datasets with a few fragments each pending
    started = time.monotonic()

    def upload(i: int) -> UUID:
        return upload_fragments(deps.catalog, deps.store, seed=i, tables=TABLES, fragments=FRAGMENTS, rows=ROWS).dataset

    with ThreadPoolExecutor(8) as pool:
        datasets = list(pool.map(upload, range(DATASETS)))
    uploaded = time.monotonic() - started
    assert len(set(datasets)) == DATASETS

    # When the daily run fires once
    triggered = time.monotonic()
    report = scale_stack.run_scheduled()
    assert len(report["enqueued"]) + sum(len(s.get("enqueued", [])) for s in scale_stack.scheduled_sequels) >= DATASETS

    # Then every dataset is compacted
    wait_for(
        lambda: _counts(pg.url)["pending"] == 0,
        timeout=3000,
        every=1.0,
    )
    wall = time.monotonic() - triggered
    counts = _counts(pg.url)
    account, compact = scale_stack.account_concurrency, scale_stack.compact_concurrency
    print(
        f"\nscale: {DATASETS} datasets x {len(TABLES)} tables x {FRAGMENTS} fragments uploaded in {uploaded:.1f} s; "
        f"one scheduled "
        f"trigger -> all compacted in {wall:.1f} s = {wall / DATASETS * 1000:.0f} ms per dataset "
        f"({DATASETS / wall:.1f} datasets/s); runs {counts}; account concurrency peak {account.peak}/"
        f"{account.limit} unreserved, {account.throttles} throttled invocations of {account.invocations}; Compact peak "
        f"{compact.peak}/{compact.limit}, {compact.throttles} throttled; DLQ {deps.dlq.depth().visible}"
    )
    # With nothing in the DLQ and no run failed: throttling delayed work, it never failed it
    assert counts.get("failed", 0) == 0
    assert counts.get("succeeded", 0) >= DATASETS
    assert deps.dlq.depth().visible == 0
    assert account.peak <= ACCOUNT_CONCURRENCY - BUDGET and compact.peak <= BUDGET
    # And the caps did bite: invocations were refused as Lambda refuses them, and retried
    assert account.throttles + compact.throttles > 0
