"""Crash the pipeline between any two of its writes, recover, and check that no row is lost or doubled.

A write is anything that changes S3 or the catalog: object puts and multipart completions,
deletes, the commit, run and lease transitions. Each example crashes once — just before or just
after the k-th write, k drawn from the writes a clean run of the same shape makes, so every
example crashes somewhere (asserted) — then recovers the way production does: Step Functions retries the step, or
the run dies and its lease expires, and a later run takes over. The daily sweep then runs. At the
end the live rows (read back from the objects) must equal the uploaded rows as a multiset, and
the dataset's prefix must hold exactly the live objects: no garbage, no orphans.
"""

from __future__ import annotations

import os
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
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.pipeline.models import CompactItem, ExecutionInput
from fusou_compaction.ports.object_store import ObjectStore, WritableObject

from .conftest import execution_input, live_rows, row_multiset, upload_fragments

T = TypeVar("T")


class Crash(Exception):
    """The process died here (Lambda timeout, OOM, a lost connection after the write)."""


class Faults:
    """Counts writes; raises Crash just before or after the ``crash_at``-th (0: never, to count)."""

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
    def __init__(self, inner: ObjectStore, faults: Faults) -> None:
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
def world(shared: tuple[str, Path]) -> Iterator[tuple[Catalog, ObjectStore, str]]:
    url, root = shared
    catalog = Catalog(PostgresRpc(url, max_size=4))
    yield catalog, LocalObjectStore(root), url
    catalog.close()


@pytest.fixture(scope="module")
def s3_world(shared: tuple[str, Path], local_aws: LocalAws) -> Iterator[tuple[Catalog, ObjectStore, str]]:
    url, _ = shared
    bucket = f"crash-{uuid4().hex[:12]}"
    store = S3ObjectStore(bucket, region=local_aws.region, endpoint_url=local_aws.endpoint_url)
    store.client.create_bucket(Bucket=bucket)
    catalog = Catalog(PostgresRpc(url, max_size=4))
    yield catalog, store, url
    catalog.close()


# Writes a clean run makes, per (store, shape): the crash point is drawn among them.
_writes_by_shape: dict[tuple[str, tuple[str, ...], int, bool], int] = {}


def _config(by_reference: bool) -> StepConfig:
    return StepConfig(lease_seconds=300, grace_period_seconds=0, inline_bin_bytes=0 if by_reference else 10**6)


def _sweep(steps_catalog: Any, steps_store: Any) -> None:
    housekeeping(steps_catalog, steps_store, orphan_min_age=timedelta(0))


def writes_of_a_clean_run(
    catalog: Catalog, store: ObjectStore, tables: tuple[str, ...], fragments: int, by_reference: bool
) -> int:
    shape = (type(store).__name__, tables, fragments, by_reference)
    if shape not in _writes_by_shape:
        up = upload_fragments(catalog, store, tables=tables, fragments=fragments, rows=20, seed=0)
        counter = Faults(crash_at=0, after=False)
        counting = CompactionSteps(FaultyCatalog(catalog, counter), FaultyStore(store, counter), _config(by_reference))  # type: ignore[arg-type]
        run_pipeline(counting, execution_input(up.dataset), lambda fn: fn())
        _sweep(counting.catalog, counting.store)
        assert not catalog.get_dataset(up.dataset).compaction_needed
        _writes_by_shape[shape] = counter.count
    return _writes_by_shape[shape]


def crash_and_recover(
    world: tuple[Catalog, ObjectStore, str],
    crash_point: int,
    after: bool,
    recovery: str,
    tables: tuple[str, ...],
    fragments: int,
    by_reference: bool,
    seed: int,
) -> None:
    catalog, store, url = world
    # Given uploaded fragments (uploads are not under test here), and a crash at one of the writes
    # a clean run of this shape makes
    writes = writes_of_a_clean_run(catalog, store, tables, fragments, by_reference)
    up = upload_fragments(catalog, store, tables=tables, fragments=fragments, rows=20, seed=seed)
    faults = Faults(1 + crash_point % writes, after)
    faulty = CompactionSteps(FaultyCatalog(catalog, faults), FaultyStore(store, faults), _config(by_reference))  # type: ignore[arg-type]
    clean = CompactionSteps(catalog, store, _config(by_reference))

    def expire_lease() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE datasets SET lease_expires_at = now() - interval '1 second' "
                "WHERE id = %s AND lease_owner IS NOT NULL",
                (up.dataset,),
            )

    def retrying(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Crash:
            return fn()  # Step Functions' Retry: the same step, the same input

    # When the pipeline and the sweep run with one crash injected
    try:
        if recovery == "retry":
            run_pipeline(faulty, execution_input(up.dataset), retrying)
            retrying(lambda: _sweep(faulty.catalog, faulty.store))
        else:
            run_pipeline(faulty, execution_input(up.dataset), lambda fn: fn())
            _sweep(faulty.catalog, faulty.store)
    except Crash:
        # The run died: its lease runs out, a later message starts a new run.
        expire_lease()
    assert not faults.armed, f"no crash: {faults.count} writes, crash point {faults.crash_at}"
    for _ in range(3):
        if not catalog.get_dataset(up.dataset).compaction_needed:
            break
        run_pipeline(clean, execution_input(up.dataset), lambda fn: fn())
    _sweep(catalog, store)

    # Then every uploaded row is live exactly once, and only live objects remain
    assert not catalog.get_dataset(up.dataset).compaction_needed
    for table, uploaded in up.rows.items():
        assert row_multiset(live_rows(catalog, store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]
    live = {f.object_key for f in catalog.list_live_files(up.dataset)}
    present = {o.key for o in store.list_objects(keys.dataset_prefix(up.dataset))}
    assert present == live


EXAMPLE = {
    "crash_point": st.integers(min_value=0, max_value=10**6),
    "after": st.booleans(),
    "recovery": st.sampled_from(["retry", "lease-expiry"]),
    "tables": st.sampled_from([("battle",), ("battle", "ship_state")]),
    "fragments": st.integers(min_value=1, max_value=3),
    "by_reference": st.booleans(),
    "seed": st.integers(min_value=0, max_value=10_000),
}
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.mark.timeout(1200)
@settings(
    max_examples=int(os.environ.get("CRASH_EXAMPLES", "1000")),
    deadline=None,
    derandomize=True,
    suppress_health_check=HEALTH,
)
@given(**EXAMPLE)
def test_no_row_is_lost_or_doubled_by_a_crash_between_writes(
    world: tuple[Catalog, ObjectStore, str], **example: Any
) -> None:
    crash_and_recover(world, **example)


@pytest.mark.timeout(900)
@settings(
    max_examples=int(os.environ.get("CRASH_S3_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    suppress_health_check=HEALTH,
)
@given(**EXAMPLE)
def test_no_row_is_lost_or_doubled_by_a_crash_between_writes_on_the_s3_emulator(
    s3_world: tuple[Catalog, ObjectStore, str], **example: Any
) -> None:
    # The same, with S3 semantics: multipart uploads (completed or aborted), conditional puts,
    # batch deletes and listings as moto's server speaks them.
    crash_and_recover(s3_world, **example)
