"""Any dataset size (issue 19, item 4): one run plans thousands of bins and compacts them all on the
local stack, with every state under 256 KB and every history under 25,000 events, as AWS would
require of the same definition (the runner enforces both limits: tests/pipeline/test_state_limits.py).

A tiny target file size makes every fragment a bin of its own. ``FUSOU_BIG_PLAN_BINS`` sets the
number of bins: ``make test`` runs 800 (past the ~750 where the old INLINE Map's gathered results
overflowed a state), ``make test-big-plan`` 3,000 (about 3.5 minutes on two shared cores: 35 s of
uploads, 104 s of run, 60 s reading every row back; ``BINS=`` for another number).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID, uuid4

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction.local.runner import HISTORY_LIMIT, PAYLOAD_LIMIT_BYTES, Execution
from fusou_compaction.local.stack import LocalStack, StackOptions
from fusou_compaction.logic.uploads import store_fragment

from .conftest import seed_body, wait_for

BINS = int(os.environ.get("FUSOU_BIG_PLAN_BINS", "800"))
pytestmark = pytest.mark.slow
ROWS_PER_FRAGMENT = 3


def fragment(i: int) -> bytes:
    """A small fragment of its own bytes (uploads are deduplicated by SHA-256)."""
    n = ROWS_PER_FRAGMENT
    table = pa.table(
        {
            "battle_id": pa.array(range(i * n, i * n + n), pa.int64()),
            "ship_hp": pa.array([(i * 7 + k) % 100 for k in range(n)], pa.int32()),
            "note": pa.array([f"fragment {i} row {k}" for k in range(n)]),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


@dataclass
class BigRun:
    stack: LocalStack
    dataset: UUID
    execution: Execution
    seconds: float
    upload_seconds: float


@pytest.fixture(scope="module")
def big_run() -> Iterator[BigRun]:
    fragments = [fragment(i) for i in range(BINS)]
    options = StackOptions(
        serve_api=False,
        run_daily_schedule=False,
        step_time_scale=0.001,
        compaction_budget=8,
        # Compact in the stack's process: the target below is set on its settings, which the worker
        # process would read from its environment (and Settings refuses under 1 MiB)
        compact_memory_mb=None,
    )
    with LocalStack(options) as stack:
        deps = stack.deps
        assert deps is not None and stack.aws is not None and stack.sfn is not None
        # A target no larger than the smallest fragment: each fragment is a bin of its own. Settings
        # holds the deployed target to >= 1 MiB; 3,000 fragments that large would be 3 GB in moto.
        target = min(len(f) for f in fragments)
        deps.settings = deps.settings.model_copy(update={"target_file_size": target})
        owner, dataset = uuid4(), uuid4()
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda data: store_fragment(
                        deps.catalog, deps.store, owner_id=owner, dataset_id=dataset, table="battle", data=data
                    ),
                    fragments,
                )
            )
        uploaded = time.monotonic() - began
        sqs = boto3.client("sqs", endpoint_url=stack.aws.endpoint_url, region_name=stack.aws.region)
        began = time.monotonic()
        sqs.send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(dataset))

        def finished() -> Execution | None:
            assert stack.sfn is not None
            for ex in list(stack.sfn.executions.values()):
                if ex.name.startswith(str(dataset)) and ex.status != "RUNNING" and ex.finished is not None:
                    return ex
            return None

        ex = wait_for(finished, timeout=1800, every=0.5)
        yield BigRun(stack, dataset, ex, time.monotonic() - began, uploaded)


def test_one_run_compacts_every_bin_of_a_large_plan_and_every_row(big_run: BigRun) -> None:
    ex, deps = big_run.execution, big_run.stack.deps
    assert deps is not None
    # Then the run succeeded, over a plan of at least BINS bins, each one a child execution
    assert ex.status == "SUCCEEDED", (ex.error, ex.cause)
    assert ex.output is not None
    plan = ex.output["plan"]
    assert plan["binCount"] >= BINS and len(ex.children) == plan["binCount"]
    assert {c.status for c in ex.children} == {"SUCCEEDED"}
    (run,) = deps.catalog.dataset_status(big_run.dataset).runs
    assert run.status == "succeeded" and run.files_in == BINS
    # And every row is accounted for: rows in = rows out = rows uploaded
    assert run.rows_in == run.rows_out == BINS * ROWS_PER_FRAGMENT
    live = deps.catalog.list_live_files(big_run.dataset)
    assert {f.kind for f in live} == {"compacted"} and sum(f.row_count for f in live) == BINS * ROWS_PER_FRAGMENT
    assert deps.catalog.list_quarantined(big_run.dataset) == []
    # And every bin's output is committed: the Map Run's results name exactly the live files
    store = deps.store
    manifest = json.loads(store.get_bytes(ex.output["compact"]["ResultWriterDetails"]["Key"]))
    results = [
        json.loads(entry["Output"])
        for f in manifest["ResultFiles"]["SUCCEEDED"]
        for entry in json.loads(store.get_bytes(f["Key"]))
    ]
    assert len({(r["table"], r["index"]) for r in results}) == plan["binCount"]
    assert sum(r["filesOut"] for r in results) == len(live) == run.files_out
    assert sum(r["rowsOut"] for r in results) == BINS * ROWS_PER_FRAGMENT
    # And the rows themselves, read back from every live object, are the uploaded ones, once each
    fs = store.filesystem()
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(lambda f: pq.read_table(store.path_for(f.object_key), filesystem=fs), live))
    ids = pa.concat_tables(tables).column("battle_id").to_pylist()
    assert sorted(ids) == list(range(BINS * ROWS_PER_FRAGMENT))


def test_no_state_reaches_256_kb_and_no_history_25000_events(big_run: BigRun) -> None:
    ex = big_run.execution
    children = ex.children
    peak_child = max(c.peak_payload_bytes for c in children)
    most_events = max(c.events for c in children)
    print(
        f"\n{len(children):,} bins compacted in {big_run.seconds:.1f} s (uploads {big_run.upload_seconds:.1f} s); "
        f"largest state {ex.peak_payload_bytes:,} bytes ({ex.peak_payload_at}), in a bin's execution "
        f"{peak_child:,} bytes; history {ex.events} events, a bin's at most {most_events}"
    )
    # Then the parent's state stayed at a pointer's size whatever the number of bins, and so did
    # every child's; and each history is a small fraction of the limit
    assert ex.peak_payload_bytes < 4096 < PAYLOAD_LIMIT_BYTES
    assert peak_child < 16 * 1024
    assert ex.events < 100 and most_events < 100 < HISTORY_LIMIT
