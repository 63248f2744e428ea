"""Pipeline overhead on the local stack: message → commit, minus the Compact (engine) time.

Uploads ~600 MB of the bench's drifted battle-record fragments into the local stack (moto S3 +
PostgreSQL), sends the seed's message to the queue and measures, from the execution's history:
the Compact Map state's wall time (the engine streaming from and to S3) and everything else
(consumer poll, StartExecution, Validate, GetMetadata, Update's commit). Target: overhead ≤ 20%
of engine time.

    .venv/bin/python bench/pipeline_overhead.py [--megabytes 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=600, help="input size to upload")
    parser.add_argument("--data", type=Path, default=None, help="a folder of <table>/*.parquet (default: generate)")
    args = parser.parse_args()

    import os

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    import boto3

    from fusou_compaction import synth
    from fusou_compaction.local.stack import LocalStack, StackOptions
    from fusou_compaction.logic.uploads import store_fragment
    from fusou_compaction.observability import logger

    logger.setLevel("ERROR")
    # Reuse `make bench`'s engine data set (2,000 fragments, ~1 GB) when it is there.
    engine_data = ROOT / ".bench" / "data-f500-r5200-s1"
    data = args.data or (engine_data if (engine_data / ".done").exists() else ROOT / ".bench" / "pipeline-data")
    if not (data / ".done").exists():
        print(f"generating fragments into {data} ...", file=sys.stderr)
        # ~0.2 MB per generated fragment, four tables.
        synth.generate_fragments(
            data,
            tables=list(synth.TABLE_NAMES),
            fragments=max(1, args.megabytes * 13 // 10),
            rows_per_fragment=5200,
            seed=11,
        )
        (data / ".done").write_text("ok")
    files = sorted(data.glob("*/*.parquet"), key=lambda p: (p.name, p.parent.name))
    budget = args.megabytes * 1_000_000
    # (table, file): when the data set is smaller than the budget its files are used again under
    # a second table name (same bytes in another table are not duplicates).
    chosen: list[tuple[str, Path]] = []
    total, copy = 0, 0
    while total < budget and files:
        for f in files:
            if total >= budget:
                break
            chosen.append((f.parent.name if copy == 0 else f"{f.parent.name}_{copy + 1}", f))
            total += f.stat().st_size
        copy += 1

    with LocalStack(StackOptions(serve_api=False, run_daily_schedule=False)) as stack:
        deps = stack.deps
        assert deps is not None and stack.aws is not None and stack.sfn is not None
        owner, dataset = uuid4(), uuid4()
        print(f"uploading {len(chosen)} fragments, {total / 1e6:.0f} MB ...", file=sys.stderr)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:

            def upload(item: tuple[str, Path]) -> None:
                table, path = item
                store_fragment(
                    deps.catalog, deps.store, owner_id=owner, dataset_id=dataset, table=table, data=path.read_bytes()
                )

            list(pool.map(upload, chosen))
        print(f"uploaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        sqs = boto3.client("sqs", endpoint_url=stack.aws.endpoint_url, region_name=stack.aws.region)
        body = json.dumps({"datasetId": str(dataset), "triggeredAt": "2025-12-17T00:00:00Z", "priority": "manual"})
        sent = time.monotonic()
        sqs.send_message(QueueUrl=deps.queue.url, MessageBody=body)
        while True:
            runs = deps.catalog.dataset_status(dataset).runs
            if runs and runs[0].status in ("succeeded", "failed"):
                committed = time.monotonic()
                break
            time.sleep(0.05)
        run = runs[0]
        (ex,) = stack.sfn.executions.values()
        compact = [h for h in ex.history if h.state == "Compact"]
        map_wall = max(h.started + h.seconds for h in compact) - min(h.started for h in compact)
        total_wall = committed - sent
        overhead = total_wall - map_wall
        by_state: dict[str, float] = {}
        for h in ex.history:
            by_state[h.state] = by_state.get(h.state, 0.0) + h.seconds
        print(
            f"\nrun {run.status}: {run.files_in} files / {run.bytes_in / 1e6:.0f} MB / {run.rows_in:,} rows in "
            f"-> {run.files_out} files / {run.bytes_out / 1e6:.0f} MB out; rows out {run.rows_out:,}"
        )
        print(f"message -> commit            {total_wall:8.2f} s")
        print(f"Compact (engine, Map wall)   {map_wall:8.2f} s  ({len(compact)} bins)")
        for state in ("Validate", "GetMetadata", "Update"):
            print(f"  {state:<26} {by_state.get(state, 0.0):8.3f} s")
        print(
            f"overhead (everything else)   {overhead:8.2f} s  = {overhead / map_wall:.1%} of engine time "
            f"(target <= 20%)"
        )
        return 0 if run.status == "succeeded" and run.rows_in == run.rows_out else 1


if __name__ == "__main__":
    raise SystemExit(main())
