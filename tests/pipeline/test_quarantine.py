"""Quarantine in the Compact step (issue 18, item 1): an input the engine names as bad for a reason
of its own is quarantined and the rest of its bin compacts in the same run; redelivery, concurrent
runs and transient errors (S3, the catalog) never quarantine what they should not, nor lose a row."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogUnavailable
from fusou_compaction.catalog.models import CatalogFile
from fusou_compaction.logic.steps import CompactionSteps, LeaseLost, StepConfig
from fusou_compaction.pipeline.models import BinManifest, CompactItem, CompactResult, ExecutionInput, PlanResult
from fusou_compaction.ports.object_store import ObjectStoreError

from ..hostile_parquet import by_name
from .conftest import execution_input, live_rows, row_multiset, upload_fragments

CONFIG = StepConfig(lease_seconds=60, target_file_size=64 * 1024 * 1024)


def plant(catalog: Catalog, store: S3ObjectStore, dataset: UUID, owner: UUID, data: bytes, rows: int) -> CatalogFile:
    """A fragment that got into the catalog without the upload checks (uploaded before them)."""
    sha = hashlib.sha256(data).hexdigest()
    key = keys.fragment_key(dataset, "battle", sha)
    store.put(key, data)
    return catalog.register_fragment(
        dataset_id=dataset,
        owner_id=owner,
        table="battle",
        object_key=key,
        size_bytes=len(data),
        row_count=rows,
        sha256=sha,
        schema_fingerprint="planted",
    )


def start(steps: CompactionSteps, ex: ExecutionInput) -> tuple[PlanResult, list[CompactItem]]:
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    items = [
        CompactItem(run_id=ex.run_id, dataset_id=ex.message.dataset_id, plan_key=plan.plan_key, bin=b)
        for b in plan.bins
    ]
    return plan, items


def manifest(store: S3ObjectStore, result: CompactResult) -> BinManifest:
    return BinManifest.model_validate_json(store.get_bytes(result.manifest_key))


def rows_accounted(catalog: Catalog, sql: psycopg.Connection, dataset: UUID) -> tuple[int, int, int]:
    """(rows registered, rows in live files, rows quarantined), by the catalog's counts."""
    row = sql.execute(
        "SELECT sum(row_count) FROM dataset_files WHERE dataset_id = %s AND kind = 'fragment'", (dataset,)
    ).fetchone()
    assert row is not None
    live = sum(f.row_count for f in catalog.list_live_files(dataset))
    quarantined = sum(f.row_count for f in catalog.list_quarantined(dataset))
    return int(row[0]), live, quarantined


def test_a_corrupt_fragment_is_quarantined_and_the_rest_of_the_dataset_compacts_in_the_same_run(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given two tables of good fragments, and one fragment whose bytes are not Parquet any more
    steps = CompactionSteps(catalog, store, CONFIG)
    up = upload_fragments(catalog, store, fragments=3)
    victim = catalog.list_live_files(up.dataset, "battle")[1]
    victims_rows = pq.read_table(pa.BufferReader(store.get_bytes(victim.object_key)))
    store.put(victim.object_key, b"PAR1 this is not parquet PAR1")
    ex = execution_input(up.dataset)
    # When the run goes through its four steps
    plan, items = start(steps, ex)
    results = [steps.compact(i) for i in items]
    update = steps.update(ex, plan, results)
    # Then it succeeded; the bad fragment is quarantined with the reason, the step and the run
    assert update.committed and not update.compaction_needed
    [q] = catalog.dataset_status(up.dataset).quarantined
    assert (q.id, q.quarantine_step, q.quarantined_by_run) == (victim.id, "Compact", ex.run_id)
    assert (q.quarantine_reason or "").startswith("CorruptInputError: ")
    assert store.exists(victim.object_key)  # its object stays
    assert sum(r.quarantined for r in results) == 1
    # And every other row is compacted, read back from the objects
    expected = Counter(row_multiset(up.rows["battle"])) - Counter(row_multiset(victims_rows))
    assert Counter(row_multiset(live_rows(catalog, store, up.dataset, "battle"))) == expected  # type: ignore[arg-type]
    assert row_multiset(live_rows(catalog, store, up.dataset, "ship_state")) == row_multiset(up.rows["ship_state"])  # type: ignore[arg-type]
    assert [f.kind for f in catalog.list_live_files(up.dataset)] == ["compacted", "compacted"]
    # And catalog rows = compacted rows + quarantined rows
    registered, live, quarantined = rows_accounted(catalog, sql, up.dataset)
    assert registered == live + quarantined and quarantined == victim.row_count == victims_rows.num_rows


def test_a_redelivered_compact_leaves_out_what_is_quarantined_and_writes_the_same(
    catalog: Catalog, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bin with a corrupt fragment, compacted once
    steps = CompactionSteps(catalog, store, CONFIG)
    up = upload_fragments(catalog, store, fragments=3, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[0]
    store.put(victim.object_key, b"PAR1 garbage PAR1")
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    first = steps.compact(item)
    # When Step Functions invokes the same bin again (a retry after a lost response)
    calls: list[Any] = []
    monkeypatch.setattr(catalog, "quarantine_file", lambda **kw: calls.append(kw))
    again = steps.compact(item)
    # Then the input is left out from the start (no second quarantine), with the same outputs
    assert calls == []
    assert manifest(store, again).outputs == manifest(store, first).outputs
    assert manifest(store, again).quarantined == manifest(store, first).quarantined
    assert steps.update(ex, plan, [again]).committed


def test_every_input_of_a_bin_quarantined_leaves_an_empty_bin_and_the_run_succeeds(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    owner, dataset = uuid4(), uuid4()
    bad = [
        plant(catalog, store, dataset, owner, by_name(n).build(), by_name(n).registered_rows)
        for n in (
            "row group says more",
            "garbage footer",
        )
    ]
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(dataset)
    plan, items = start(steps, ex)
    results = [steps.compact(i) for i in items]
    assert [manifest(store, r).input_ids for r in results] == [[]]
    update = steps.update(ex, plan, results)
    assert update.committed and update.files_out == 0 and not update.compaction_needed
    assert {q.id for q in catalog.list_quarantined(dataset)} == {b.id for b in bad}
    registered, live, quarantined = rows_accounted(catalog, sql, dataset)
    assert (registered, live) == (quarantined, 0)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("100-deep nesting", "UnsupportedInputError"),
        ("non-UTF-8 name", "UnsupportedInputError"),
        ("value past the decode limit", "DecodeBudgetError"),
        ("pages hold fewer", "CorruptInputError"),
        ("row group says fewer", "CorruptInputError"),
    ],
)
def test_each_typed_input_error_quarantines_with_its_name(
    catalog: Catalog, store: S3ObjectStore, case: str, error: str
) -> None:
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    c = by_name(case)
    bad = plant(catalog, store, up.dataset, up.owner, c.build(), c.registered_rows)
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(up.dataset)
    plan, items = start(steps, ex)
    update = steps.update(ex, plan, [steps.compact(i) for i in items])
    [q] = catalog.list_quarantined(up.dataset)
    assert q.id == bad.id and (q.quarantine_reason or "").startswith(f"{error}: ")
    assert update.committed and row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(  # type: ignore[arg-type]
        up.rows["battle"]
    )


def test_a_value_that_cannot_be_cast_to_the_unified_schema_is_quarantined_even_uploaded_through_the_checks(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    from fusou_compaction.logic.uploads import store_fragment

    # Given two fragments that pass every upload check, one in seconds far in the future, one in ns
    owner, dataset = uuid4(), uuid4()
    far, ns = by_name("timestamp past nanoseconds"), by_name("timestamp in nanoseconds")
    stored = [
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=c.build())
        for c in (far, ns)
    ]
    # When they are compacted together (the unified column is in nanoseconds)
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(dataset)
    plan, items = start(steps, ex)
    update = steps.update(ex, plan, [steps.compact(i) for i in items])
    # Then the one that does not fit is quarantined, and the other compacted
    [q] = catalog.list_quarantined(dataset)
    assert q.id == stored[0].fragment_id and (q.quarantine_reason or "").startswith("SchemaCastError: ")
    assert update.committed and update.rows_out == ns.rows


class FlakyStore:
    """The S3 store, with reads of some keys failing the way an S3 outage makes pyarrow fail."""

    def __init__(self, store: S3ObjectStore, failing: set[str], *, get_fails: bool = False) -> None:
        self._store = store
        self.failing = {store.path_for(k) for k in failing}
        self.get_fails = get_fails
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def filesystem(self) -> pafs.FileSystem:
        return pafs.PyFileSystem(_FlakyHandler(self._store.filesystem(), self))

    def get_bytes(self, key: str, **kw: Any) -> bytes:
        if self.get_fails and self._store.path_for(key) in self.failing:
            raise ObjectStoreError(f"S3 is down: {key}")
        return self._store.get_bytes(key, **kw)


class _FlakyHandler(pafs.FileSystemHandler):
    def __init__(self, fs: pafs.FileSystem, owner: FlakyStore) -> None:
        self.fs, self.owner = fs, owner

    def _check(self, path: str) -> None:
        if path in self.owner.failing:
            self.owner.failures += 1
            raise OSError(f"When reading information for key '{path}': AWS Error SLOW_DOWN during GetObject")

    def open_input_file(self, path: str) -> Any:
        self._check(path)
        return self.fs.open_input_file(path)

    def open_input_stream(self, path: str) -> Any:
        self._check(path)
        return self.fs.open_input_stream(path)

    def get_file_info(self, paths: list[str]) -> Any:
        return self.fs.get_file_info(paths)

    def get_type_name(self) -> str:
        return "flaky"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        raise NotImplementedError

    def delete_dir(self, path: str) -> None:
        raise NotImplementedError

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        raise NotImplementedError

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        raise NotImplementedError

    def move(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def copy_file(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        raise NotImplementedError

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        raise NotImplementedError


@pytest.mark.parametrize("s3_down_for_the_check_too", [False, True])
def test_an_s3_failure_while_reading_never_quarantines(
    catalog: Catalog, store: S3ObjectStore, s3_down_for_the_check_too: bool
) -> None:
    # Given a good fragment whose reads fail as S3 fails when it throttles or is down
    up = upload_fragments(catalog, store, fragments=3, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[1]
    flaky = FlakyStore(store, {victim.object_key}, get_fails=s3_down_for_the_check_too)
    steps = CompactionSteps(catalog, flaky, CONFIG)  # type: ignore[arg-type]
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    # When its bin is compacted, Then the step fails with the object store's (retried) error
    with pytest.raises(ObjectStoreError):
        steps.compact(item)
    assert flaky.failures >= 1
    # And nothing was quarantined: once S3 is back, the retry compacts every row
    assert catalog.list_quarantined(up.dataset) == []
    flaky.failing.clear()
    update = steps.update(ex, plan, [steps.compact(item)])
    assert update.committed and row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(  # type: ignore[arg-type]
        up.rows["battle"]
    )


def test_a_catalog_outage_while_quarantining_quarantines_nothing_and_is_retried(
    catalog: Catalog, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[0]
    store.put(victim.object_key, b"PAR1 garbage PAR1")
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    real = catalog.quarantine_file

    def down(**kw: Any) -> Any:
        raise CatalogUnavailable("connection reset")

    monkeypatch.setattr(catalog, "quarantine_file", down)
    with pytest.raises(CatalogUnavailable):
        steps.compact(item)
    assert catalog.list_quarantined(up.dataset) == []
    monkeypatch.setattr(catalog, "quarantine_file", real)
    update = steps.update(ex, plan, [steps.compact(item)])
    assert update.committed and [q.id for q in catalog.list_quarantined(up.dataset)] == [victim.id]


def test_a_run_that_lost_its_lease_quarantines_nothing(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a run whose lease another run took over while it compacted a bin with a bad input
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[0]
    store.put(victim.object_key, b"PAR1 garbage PAR1")
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(up.dataset)
    _plan, [item] = start(steps, ex)
    real = catalog.acquire_lease

    def renew_then_lose(**kw: Any) -> Any:
        got = real(**kw)  # the step's heartbeat succeeds...
        sql.execute("UPDATE datasets SET lease_owner = %s, lease_expires_at = now() + interval '1 minute'", (uuid4(),))
        return got  # ...and right after it another run holds the lease

    catalog.acquire_lease = renew_then_lose  # type: ignore[method-assign]
    try:
        with pytest.raises(LeaseLost):
            steps.compact(item)
    finally:
        catalog.acquire_lease = real  # type: ignore[method-assign]
    assert catalog.list_quarantined(up.dataset) == []


def test_a_readmitted_fragment_is_compacted_by_the_next_run_once_fixed(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a fragment quarantined because its object was damaged, and then restored
    steps = CompactionSteps(catalog, store, CONFIG)
    up = upload_fragments(catalog, store, fragments=3, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[2]
    good = store.get_bytes(victim.object_key)
    store.put(victim.object_key, b"PAR1 garbage PAR1")
    ex = execution_input(up.dataset)
    plan, items = start(steps, ex)
    steps.update(ex, plan, [steps.compact(i) for i in items])
    store.put(victim.object_key, good)
    # When an operator re-admits it and the next run goes
    catalog.readmit_quarantined(victim.id)
    assert catalog.get_dataset(up.dataset).compaction_needed
    ex2 = execution_input(up.dataset)
    plan2, items2 = start(steps, ex2)
    assert steps.update(ex2, plan2, [steps.compact(i) for i in items2]).committed
    # Then every uploaded row is in the table again, once
    assert row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(up.rows["battle"])  # type: ignore[arg-type]
    assert catalog.list_quarantined(up.dataset) == []
    registered, live, quarantined = rows_accounted(catalog, sql, up.dataset)
    assert registered == live and quarantined == 0


def test_a_planted_file_whose_catalog_count_lies_is_quarantined(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given a good file registered (without the upload checks) with a row count it does not hold
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    table = pa.table({"battle_id": pa.array(range(5), pa.int64())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    bad = plant(catalog, store, up.dataset, up.owner, sink.getvalue().to_pybytes(), rows=50)
    steps = CompactionSteps(catalog, store, CONFIG)
    ex = execution_input(up.dataset)
    plan, items = start(steps, ex)
    update = steps.update(ex, plan, [steps.compact(i) for i in items])
    [q] = catalog.list_quarantined(up.dataset)
    assert q.id == bad.id and "catalog says 50" in (q.quarantine_reason or "")
    assert update.committed
