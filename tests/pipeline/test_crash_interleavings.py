"""Crash the pipeline between any two of its writes, recover, and check that no row is lost or doubled.

A write is anything that changes S3 or the catalog: object puts and multipart completions,
deletes, the commit, run and lease transitions. Each example crashes once — just before or just
after the k-th write — then recovers the way production does: Step Functions retries the step, or
the run dies and its lease expires, and a later run takes over. The daily sweep then runs. At the
end the live rows (read back from the objects) must equal the uploaded rows as a multiset, and
the dataset's prefix must hold exactly the live objects: no garbage, no orphans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusou_compaction import keys
from fusou_compaction.adapters.local_store import LocalObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.pipeline.models import CompactItem, ExecutionInput
from fusou_compaction.ports.object_store import WritableObject

from .conftest import execution_input, live_rows, row_multiset, upload_fragments

T = TypeVar("T")


class Crash(Exception):
    """The process died here (Lambda timeout, OOM, a lost connection after the write)."""


class Faults:
    def __init__(self, crash_at: int, after: bool) -> None:
        self.crash_at, self.after, self.count, self.armed = crash_at, after, 0, True

    def write(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.count += 1
        hit = self.armed and self.count == self.crash_at
        if hit and not self.after:
            self.armed = False
            raise Crash(f"before {name}")
        result = fn(*args, **kwargs)
        if hit:
            self.armed = False
            raise Crash(f"after {name}")
        return result


class FaultyCatalog:
    WRITES = {
        "begin_run",
        "acquire_lease",
        "release_lease",
        "record_run_status",
        "commit_compaction",
        "sweep_expired_leases",
        "mark_objects_deleted",
        "release_claims",
        "record_failure",
    }

    def __init__(self, inner: Catalog, faults: Faults) -> None:
        self._inner, self._faults = inner, faults

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in self.WRITES:
            return lambda *a, **kw: self._faults.write(f"catalog.{name}", attr, *a, **kw)
        return attr


class FaultyWriter:
    def __init__(self, inner: WritableObject, faults: Faults, key: str) -> None:
        self._inner, self._faults, self._key = inner, faults, key

    def close(self) -> None:
        try:
            self._faults.write(f"complete {self._key}", self._inner.close)
        except Crash:
            if not self._inner.closed:
                self._inner.abort()  # a crash before completing leaves nothing under the key
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FaultyStore:
    def __init__(self, inner: LocalObjectStore, faults: Faults) -> None:
        self._inner, self._faults = inner, faults

    def put(self, key: str, body: bytes, **kw: Any) -> None:
        self._faults.write(f"put {key}", self._inner.put, key, body, **kw)

    def put_if_absent(self, key: str, body: bytes, **kw: Any) -> bool:
        return self._faults.write(f"put {key}", self._inner.put_if_absent, key, body, **kw)

    def delete_many(self, keys_: list[str]) -> list[str]:
        return self._faults.write("delete", self._inner.delete_many, keys_)

    def open_writer(self, key: str, **kw: Any) -> FaultyWriter:
        return FaultyWriter(self._inner.open_writer(key, **kw), self._faults, key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_pipeline(steps: CompactionSteps, ex: ExecutionInput, call: Callable[[Callable[[], T]], T]) -> None:
    if call(lambda: steps.validate(ex)).action == "skip":
        return
    plan = call(lambda: steps.get_metadata(ex))
    results = [
        call(
            lambda b=b: steps.compact(
                CompactItem(run_id=ex.run_id, dataset_id=ex.message.dataset_id, plan_key=plan.plan_key, bin=b)
            )
        )
        for b in plan.bins
    ]
    call(lambda: steps.update(ex, plan, results))


@pytest.fixture(scope="module")
def shared(
    pg_server: Any, catalog_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    # One database and one folder for all examples; every example uses fresh dataset ids.
    name = f"crash_{uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {catalog_template}")
    yield pg_server.url_for(name), tmp_path_factory.mktemp("objects")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def world(shared: tuple[str, Path]) -> Iterator[tuple[Catalog, LocalObjectStore, str]]:
    url, root = shared
    catalog = Catalog(PostgresRpc(url, max_size=4))
    yield catalog, LocalObjectStore(root), url
    catalog.close()


@pytest.mark.timeout(1200)
@settings(
    max_examples=int(__import__("os").environ.get("CRASH_EXAMPLES", "1000")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    crash_at=st.integers(min_value=1, max_value=24),
    after=st.booleans(),
    recovery=st.sampled_from(["retry", "lease-expiry"]),
    tables=st.sampled_from([("battle",), ("battle", "ship_state")]),
    fragments=st.integers(min_value=1, max_value=3),
    by_reference=st.booleans(),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_no_row_is_lost_or_doubled_by_a_crash_between_writes(
    world: tuple[Catalog, LocalObjectStore, str],
    crash_at: int,
    after: bool,
    recovery: str,
    tables: tuple[str, ...],
    fragments: int,
    by_reference: bool,
    seed: int,
) -> None:
    catalog, store, url = world
    # Given uploaded fragments (uploads are not under test here)
    up = upload_fragments(catalog, store, tables=tables, fragments=fragments, rows=20, seed=seed)
    faults = Faults(crash_at, after)
    config = StepConfig(lease_seconds=300, grace_period_seconds=0, inline_plan_bytes=0 if by_reference else 10**6)
    faulty = CompactionSteps(FaultyCatalog(catalog, faults), FaultyStore(store, faults), config)  # type: ignore[arg-type]
    clean = CompactionSteps(catalog, store, config)

    def expire_lease() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE datasets SET lease_expires_at = now() - interval '1 second' "
                "WHERE id = %s AND lease_owner IS NOT NULL",
                (up.dataset,),
            )

    def sweep(steps_catalog: Any, steps_store: Any) -> None:
        housekeeping(steps_catalog, steps_store, orphan_min_age=timedelta(0))

    def retrying(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Crash:
            return fn()  # Step Functions' Retry: the same step, the same input

    # When the pipeline and the sweep run with one crash injected
    try:
        if recovery == "retry":
            run_pipeline(faulty, execution_input(up.dataset), retrying)
            retrying(lambda: sweep(faulty.catalog, faulty.store))
        else:
            run_pipeline(faulty, execution_input(up.dataset), lambda fn: fn())
            sweep(faulty.catalog, faulty.store)
    except Crash:
        # The run died: its lease runs out, a later message starts a new run.
        expire_lease()
    for _ in range(3):
        if not catalog.get_dataset(up.dataset).compaction_needed:
            break
        run_pipeline(clean, execution_input(up.dataset), lambda fn: fn())
    sweep(catalog, store)

    # Then every uploaded row is live exactly once, and only live objects remain
    assert not catalog.get_dataset(up.dataset).compaction_needed
    for table, uploaded in up.rows.items():
        assert row_multiset(live_rows(catalog, store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]
    live = {f.object_key for f in catalog.list_live_files(up.dataset)}
    present = {o.key for o in store.list_objects(keys.dataset_prefix(up.dataset))}
    assert present == live
