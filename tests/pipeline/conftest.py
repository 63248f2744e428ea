from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction import synth
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.local.stack import LocalStack, StackOptions
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import CompactionMessage, ExecutionInput, execution_name_for, run_id_for
from fusou_compaction.ports.object_store import ObjectStore


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.1, describe: Callable[[], Any] | None = None
) -> Any:
    """`describe` says what the world looked like when the wait ran out (for a failure to explain itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s" + (f": {describe()}" if describe else ""))


def seed_body(dataset_id: UUID, priority: str = "manual") -> str:
    """The seed's exact message body."""
    return json.dumps({"datasetId": str(dataset_id), "triggeredAt": "2025-12-17T00:00:00Z", "priority": priority})


@dataclass
class Uploaded:
    owner: UUID
    dataset: UUID
    rows: dict[str, pa.Table]  # table -> every uploaded row, in upload order


def upload_fragments(
    catalog: Catalog,
    store: ObjectStore,
    *,
    tables: tuple[str, ...] = ("battle", "ship_state"),
    fragments: int = 4,
    rows: int = 100,
    seed: int = 0,
    dataset: UUID | None = None,
    owner: UUID | None = None,
    drift: bool = False,
) -> Uploaded:
    owner, dataset = owner or uuid4(), dataset or uuid4()
    by_table: dict[str, list[pa.Table]] = {}
    for frag in synth.iter_fragments(
        tables=list(tables), fragments=fragments, rows_per_fragment=rows, seed=seed, drift=drift
    ):
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table=frag.table, data=frag.data)
        by_table.setdefault(frag.table, []).append(pq.read_table(pa.BufferReader(frag.data)))
    return Uploaded(
        owner, dataset, {t: pa.concat_tables(ts, promote_options="permissive") for t, ts in by_table.items()}
    )


def live_rows(catalog: Catalog, store: ObjectStore, dataset: UUID, table: str) -> pa.Table | None:
    """Every live row of a table, read back from the objects (not from any bookkeeping)."""
    files = catalog.list_live_files(dataset, table)
    if not files:
        return None
    fs = store.filesystem()
    parts = [pq.read_table(store.path_for(f.object_key), filesystem=fs) for f in files]
    return pa.concat_tables(parts, promote_options="permissive")


def row_multiset(table: pa.Table) -> list[str]:
    # Rows as canonical JSON, sorted: equal lists mean the same rows, each as often.
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def execution_input(dataset: UUID, message_id: str | None = None, priority: str = "manual") -> ExecutionInput:
    message_id = message_id or str(uuid4())
    msg = CompactionMessage.model_validate_json(seed_body(dataset, priority))
    return ExecutionInput(
        message=msg,
        message_id=message_id,
        body=seed_body(dataset, priority),
        run_id=run_id_for(message_id),
        execution_name=execution_name_for(dataset, message_id),
    )


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    c = Catalog(PostgresRpc(database_url, max_size=8))
    yield c
    c.close()


@pytest.fixture
def store(local_aws: LocalAws, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(bucket, endpoint_url=local_aws.endpoint_url)


@pytest.fixture
def steps(catalog: Catalog, store: S3ObjectStore) -> CompactionSteps:
    return CompactionSteps(catalog, store, StepConfig(lease_seconds=60, target_file_size=64 * 1024 * 1024))


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(StackOptions(serve_api=False, run_daily_schedule=False, step_time_scale=0.001)) as s:
        yield s


@pytest.fixture
def sql(database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection for arranging catalog state behind the service's back."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def pending(sql: psycopg.Connection, n: int) -> list[UUID]:
    """n datasets that need compaction, oldest first, arranged in the catalog directly (no objects, no files)."""
    ids = [uuid4() for _ in range(n)]
    with sql.cursor() as cur:
        cur.executemany(
            "INSERT INTO datasets (id, owner_id, compaction_needed, updated_at)"
            " VALUES (%s, %s, true, now() - %s * interval '1 ms')",
            [(d, uuid4(), n - i) for i, d in enumerate(ids)],
        )
    return ids
