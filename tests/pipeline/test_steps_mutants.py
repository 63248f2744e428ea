"""logic/steps.py: what mutation testing (make mutate MODULE=logic.steps) found untested.

test_steps.py runs the four steps end to end and checks the rows; here each step's other promises
are pinned: what Validate and GetMetadata record on the run (reason, execution, message, the
planned counts, each step's time), the plan's and manifests' objects (keys, JSON field names,
content types), Compact's quarantine in each of its paths (the reason's words, an input another
attempt quarantined, an input the engine names wrongly, a read that fails but whose bytes are
fine), the bin whose every input was quarantined, Update's refusals and what its commit records,
the Compact Map's export (compact_results) and the failure path that reads a failed child's
error from it (record_failure, _failed_bin).

Step timings are checked against a clock that advances a fixed 1.23456789 s per reading (the
module's ``time`` replaced), so each step's recorded time is exactly 1.2346: no timed assertion.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction import engine, keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.logic import steps as steps_module
from fusou_compaction.logic.steps import (
    CompactionSteps,
    DatasetNotFound,
    LeaseLost,
    PlanMismatch,
    StepConfig,
    state_input,
)
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import (
    BinManifest,
    CompactItem,
    CompactResult,
    ExecutionInput,
    FailureInput,
    MapRunOutput,
    PlanResult,
    StepError,
)
from fusou_compaction.ports.object_store import ObjectStoreError
from fusou_compaction.settings import Settings

from ..conftest import load_event
from ..hostile_parquet import by_name
from .conftest import execution_input, live_rows, row_multiset, upload_fragments
from .test_quarantine import plant

CONFIG = StepConfig(lease_seconds=60, target_file_size=64 * 1024 * 1024)
TICK = 1.23456789  # seconds per reading of the fake clock
STEP_TIME = 1.2346  # one step's recorded time: two readings apart, to 4 decimals
GARBAGE = b"PAR1 garbage PAR1"


# -- fixtures and helpers -------------------------------------------------------------------------


class FakeClock:
    """time.monotonic advancing TICK per reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += TICK
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(steps_module, "time", fake)
    return fake


def log_records(logs: io.StringIO, message: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("message") == message]


def start(steps: CompactionSteps, ex: ExecutionInput) -> tuple[PlanResult, list[CompactItem]]:
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    items = [
        CompactItem(run_id=ex.run_id, dataset_id=ex.message.dataset_id, plan_key=plan.plan_key, bin=b)
        for b in plan.bins
    ]
    return plan, items


def run_all(steps: CompactionSteps, ex: ExecutionInput) -> tuple[PlanResult, list[CompactResult], Any]:
    plan, items = start(steps, ex)
    results = [steps.compact(i) for i in items]
    return plan, results, steps.update(ex, plan, results)


def manifest_of(store: S3ObjectStore, result: CompactResult) -> BinManifest:
    return BinManifest.model_validate_json(store.get_bytes(result.manifest_key))


def run_row(catalog: Catalog, dataset: UUID, run_id: UUID) -> Any:
    return {r.id: r for r in catalog.dataset_status(dataset).runs}[run_id]


def content_type(s3_client: Any, bucket: str, key: str) -> str:
    return s3_client.head_object(Bucket=bucket, Key=key)["ContentType"]  # type: ignore[no-any-return]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


class Wrapped:
    """The S3 store, every call passed through unless a test overrides it."""

    def __init__(self, store: S3ObjectStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# -- StepConfig, state_input ------------------------------------------------------------------------


def test_the_step_config_takes_the_lease_target_and_grace_from_the_settings() -> None:
    settings = Settings(
        catalog_transport="postgres",
        database_url="postgresql://unused",
        lease_seconds=45,
        target_file_size=3 * 1024 * 1024,
        grace_period_seconds=7,
    )
    assert StepConfig.from_settings(settings) == StepConfig(
        lease_seconds=45, target_file_size=3 * 1024 * 1024, grace_period_seconds=7
    )


def test_a_steps_event_gives_its_execution() -> None:
    event = load_event("step_validate.json")
    ex = state_input(event)
    assert ex == ExecutionInput.model_validate(event["execution"])
    assert str(ex.run_id) == event["execution"]["runId"]


# -- Validate ---------------------------------------------------------------------------------------


def test_validate_records_the_execution_the_message_and_its_time_and_returns_the_lease(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection, clock: FakeClock
) -> None:
    # Given a dataset with fragments
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    ex = execution_input(up.dataset)
    # When Validate starts the run
    result = steps.validate(ex)
    # Then it returns the lease's expiry, and the run records its execution, message and time
    assert result.action == "compact"
    dataset = catalog.get_dataset(up.dataset)
    assert dataset.lease_owner == ex.run_id
    assert result.lease_expires_at is not None and result.lease_expires_at == dataset.lease_expires_at
    row = sql.execute("SELECT execution_id, message FROM compaction_runs WHERE id = %s", (ex.run_id,)).fetchone()
    assert row == (ex.execution_name, ex.message.to_json_dict())
    run = run_row(catalog, up.dataset, ex.run_id)
    assert (run.status, run.step_timings) == ("running", {"Validate": STEP_TIME})


def test_validate_names_the_unknown_dataset(steps: CompactionSteps) -> None:
    dataset = uuid4()
    with pytest.raises(DatasetNotFound) as raised:
        steps.validate(execution_input(dataset))
    assert str(raised.value) == f"unknown dataset {dataset}"


def test_a_skipped_run_records_its_reason_and_its_time(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, clock: FakeClock
) -> None:
    # Given a dataset whose lease another run holds, and then one with nothing to compact
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    first, second = execution_input(up.dataset), execution_input(up.dataset)
    steps.validate(first)
    # When Validate runs for a second run, Then it is skipped with its reason and time recorded
    held = steps.validate(second)
    assert held.action == "skip" and held.reason == f"lease held by run {first.run_id}"
    run = run_row(catalog, up.dataset, second.run_id)
    assert (run.status, run.status_reason, run.step_timings) == ("skipped", held.reason, {"Validate": STEP_TIME})

    other = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    run_all(steps, execution_input(other.dataset))
    again = execution_input(other.dataset)
    assert steps.validate(again).reason == "nothing to compact"
    run = run_row(catalog, other.dataset, again.run_id)
    assert (run.status, run.status_reason, run.step_timings) == (
        "skipped",
        "nothing to compact",
        {"Validate": STEP_TIME},
    )


# -- GetMetadata ------------------------------------------------------------------------------------


def test_get_metadata_counts_what_it_planned_and_records_it_on_the_run(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, clock: FakeClock
) -> None:
    # Given fragments of two tables
    up = upload_fragments(catalog, store, fragments=3)
    files = catalog.list_live_files(up.dataset)
    ex = execution_input(up.dataset)
    steps.validate(ex)
    # When GetMetadata plans them
    plan = steps.get_metadata(ex)
    # Then the plan says where its parts are and counts every file, byte and row
    assert (plan.plan_key, plan.items_key, plan.results_prefix) == (
        keys.plan_prefix(ex.run_id),
        keys.plan_items_key(ex.run_id),
        keys.map_results_prefix(ex.run_id),
    )
    assert (plan.files_planned, plan.bytes_planned, plan.rows_planned) == (
        len(files),
        sum(f.size_bytes for f in files),
        sum(f.row_count for f in files),
    )
    # And the run records them, and the step's time, before anything is committed
    run = run_row(catalog, up.dataset, ex.run_id)
    assert (run.files_in, run.bytes_in, run.rows_in) == (
        plan.files_planned,
        plan.bytes_planned,
        plan.rows_planned,
    )
    assert run.step_timings == {"Validate": STEP_TIME, "GetMetadata": STEP_TIME}


def test_each_planned_input_carries_its_upload_position_and_its_kind(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a table compacted once (one small compacted file), then three more fragments
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    run_all(steps, execution_input(up.dataset))
    upload_fragments(catalog, store, fragments=3, tables=("battle",), seed=3, dataset=up.dataset, owner=up.owner)
    files = {f.id: f for f in catalog.list_live_files(up.dataset)}
    # When the next run plans them
    ex = execution_input(up.dataset)
    steps.validate(ex)
    (ref,) = steps.get_metadata(ex).bins
    # Then every input is there in upload order, with its catalog position, kind and schema
    assert ref.inputs is not None
    assert [(i.id, i.seq, i.kind, i.row_count) for i in ref.inputs] == [
        (f.id, f.seq, f.kind, f.row_count) for f in sorted(files.values(), key=lambda f: f.seq)
    ]
    assert [i.kind for i in ref.inputs] == ["compacted", "fragment", "fragment", "fragment"]


def test_a_large_compacted_file_is_left_alone_by_the_plan(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given a table compacted once into a file larger than half the target, then one fragment
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60))
    run_all(steps, execution_input(up.dataset))
    (compacted,) = catalog.list_live_files(up.dataset)
    upload_fragments(catalog, store, fragments=1, tables=("battle",), seed=5, dataset=up.dataset, owner=up.owner)
    # When a run plans with a target under twice the compacted file's size
    small = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, target_file_size=compacted.size_bytes + 1))
    ex = execution_input(up.dataset)
    small.validate(ex)
    plan = small.get_metadata(ex)
    # Then only the new fragment is planned: the compacted file is done
    assert [i.kind for b in plan.bins for i in b.inputs or []] == ["fragment"]


def test_a_fragment_without_rows_is_planned_as_such_and_retired_without_quarantine(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a dataset with a fragment of no rows (a column of its own) among others
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    empty = pa.table({"battle_id": pa.array([], pa.int64()), "ghost": pa.array([], pa.string())})
    stored = store_fragment(
        catalog, store, owner_id=up.owner, dataset_id=up.dataset, table="battle", data=parquet_bytes(empty)
    )
    # When the dataset is compacted
    plan, results, update = run_all(steps, execution_input(up.dataset))
    # Then the plan says it has no rows, nothing is quarantined, and it is retired with the rest
    assert [i.row_count for b in plan.bins for i in b.inputs or [] if i.id == stored.fragment_id] == [0]
    assert catalog.list_quarantined(up.dataset) == []
    assert update.committed and update.files_in == 3
    # And the table's schema came from the catalog without the empty fragment's column
    assert [manifest_of(store, r).schema_source for r in results] == ["catalog"]
    rows = live_rows(catalog, store, up.dataset, "battle")
    assert rows is not None and "ghost" not in rows.column_names
    assert row_multiset(rows) == row_multiset(up.rows["battle"])


def test_the_plans_objects_are_json_with_the_wire_names(
    catalog: Catalog, store: S3ObjectStore, s3_client: Any, bucket: str
) -> None:
    # Given a plan whose bins go to S3 (inline threshold lowered)
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, inline_bin_bytes=100))
    ex = execution_input(up.dataset)
    steps.validate(ex)
    plan = steps.get_metadata(ex)
    (ref,) = plan.bins
    bin_key = keys.plan_bin_key(ex.run_id, ref.table, ref.index)
    # Then both objects are JSON, under the camelCase names the state machine and Compact read
    assert content_type(s3_client, bucket, bin_key) == "application/json"
    assert content_type(s3_client, bucket, plan.items_key) == "application/json"
    (item,) = json.loads(store.get_bytes(plan.items_key))
    assert set(item) == {"table", "index", "inputCount", "inputs"} and item["inputs"] is None
    inputs = json.loads(store.get_bytes(bin_key))
    assert set(inputs[0]) == {"id", "key", "sizeBytes", "rowCount", "seq", "kind", "schemaFingerprint"}


# -- Compact ----------------------------------------------------------------------------------------


def test_compact_names_the_run_and_the_lease_holder_when_it_lost_the_lease(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    ex = execution_input(up.dataset)
    _plan, [item] = start(steps, ex)
    other = uuid4()
    sql.execute("UPDATE datasets SET lease_owner = %s, lease_expires_at = now() + interval '1 minute'", (other,))
    with pytest.raises(LeaseLost) as raised:
        steps.compact(item)
    assert str(raised.value) == f"run {ex.run_id} lost the lease on {up.dataset} to {other}"


def test_a_bins_manifest_and_outputs_are_written_under_the_runs_keys_with_their_types(
    steps: CompactionSteps,
    catalog: Catalog,
    store: S3ObjectStore,
    s3_client: Any,
    bucket: str,
    clock: FakeClock,
) -> None:
    # Given a planned bin
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    # When it is compacted
    result = steps.compact(item)
    # Then its manifest is JSON at the run's key, under the wire names, with the step's time
    assert result.manifest_key == keys.manifest_key(ex.run_id, "battle", 0)
    assert content_type(s3_client, bucket, result.manifest_key) == "application/json"
    raw = json.loads(store.get_bytes(result.manifest_key))
    assert {"runId", "inputIds", "rowsIn", "bytesIn", "schemaSource", "quarantined"} <= set(raw)
    manifest = BinManifest.model_validate(raw)
    assert manifest.seconds == STEP_TIME
    # And each output is Parquet under the run's prefix, its checksum that of its bytes
    (output,) = manifest.outputs
    assert output.key.startswith(keys.compacted_prefix(up.dataset, "battle", ex.run_id) + "part-00000")
    assert content_type(s3_client, bucket, output.key) == "application/vnd.apache.parquet"
    assert output.sha256 == hashlib.sha256(store.get_bytes(output.key)).hexdigest()
    # And the commit records that checksum, and the Compact and Update times
    update = steps.update(ex, plan, [result])
    (live,) = catalog.list_live_files(up.dataset)
    assert (live.object_key, live.sha256) == (output.key, output.sha256)
    run = run_row(catalog, up.dataset, ex.run_id)
    assert run.step_timings == {
        "Validate": STEP_TIME,
        "GetMetadata": STEP_TIME,
        "Compact": STEP_TIME,
        "Update": STEP_TIME,
    }
    assert (update.files_in, update.files_out, update.bytes_out) == (2, 1, output.bytes)
    assert update.bytes_in == sum(i.size_bytes for i in item.bin.inputs or [])


def test_an_outputs_new_schema_is_recorded_in_the_catalog(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given two fragments of a table with different columns (their union is a schema of its own)
    owner, dataset = uuid4(), uuid4()
    for t in (pa.table({"battle_id": [1, 2], "rank": ["S", "A"]}), pa.table({"battle_id": [3], "hp": [10]})):
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=parquet_bytes(t))
    fragments = catalog.list_live_files(dataset)
    # When they are compacted
    _plan, _results, update = run_all(steps, execution_input(dataset))
    # Then the output's schema is recorded under its fingerprint
    (output,) = catalog.list_live_files(dataset)
    assert update.committed and output.schema_fingerprint not in {f.schema_fingerprint for f in fragments}
    assert list(catalog.get_schemas([output.schema_fingerprint])) == [output.schema_fingerprint]


def test_outputs_roll_over_at_the_target_size_and_each_keeps_its_inputs_position(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given one bin of three fragments holding 15 MiB decoded (an output row group takes 12 MiB),
    # compacted with a target of one byte: each row group starts a file of its own
    owner, dataset = uuid4(), uuid4()
    n = 26_000
    for k in range(3):
        ids = range(k * n, (k + 1) * n)
        t = pa.table({"battle_id": pa.array(ids, pa.int64()), "pad": [f"{i:010d}" * 20 for i in ids]})
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=parquet_bytes(t))
    fragments = {f.id: f for f in catalog.list_live_files(dataset)}
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60))
    ex = execution_input(dataset)
    plan, [item] = start(steps, ex)
    tiny = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, target_file_size=1))
    result = tiny.compact(item)
    # Then there is more than one output
    manifest = manifest_of(store, result)
    assert len(manifest.outputs) > 1 and result.files_out == len(manifest.outputs)
    # And after the commit each output sits at the upload position of its own first input
    steps.update(ex, plan, [result])
    live = {f.object_key: f for f in catalog.list_live_files(dataset)}
    for o in manifest.outputs:
        assert live[o.key].seq == min(fragments[i].seq for i in o.input_ids)
    assert len({f.seq for f in live.values()}) == len(live)


def test_a_retried_compact_takes_its_bins_quarantined_inputs_from_the_catalog_and_no_other_bins(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, logs: io.StringIO
) -> None:
    # Given two tables, one fragment of "battle" damaged
    up = upload_fragments(catalog, store, fragments=2)
    victim = catalog.list_live_files(up.dataset, "battle")[0]
    store.put(victim.object_key, GARBAGE)
    ex = execution_input(up.dataset)
    plan, items = start(steps, ex)
    by_table = {i.bin.table: i for i in items}
    # When "battle" is compacted, Then the damaged fragment is quarantined, its reason the engine's
    first = steps.compact(by_table["battle"])
    assert first.quarantined == 1
    [q] = manifest_of(store, first).quarantined
    [record] = catalog.list_quarantined(up.dataset)
    reason = record.quarantine_reason
    # (the bytes' own verdict, read from a copy: pyarrow's words for 17 bytes that claim a footer)
    assert reason is not None and reason.startswith("CorruptInputError: ArrowInvalid: Parquet file size is 17 bytes")
    assert (q.id, q.key, q.rows, q.reason) == (victim.id, victim.object_key, victim.row_count, reason)
    # And the quarantine is logged with the run, dataset, table, key and reason
    [logged] = log_records(
        logs, "input quarantined: it cannot be compacted; the rest of its bin is compacted without it"
    )
    assert (logged["runId"], logged["datasetId"], logged["table"], logged["key"], logged["reason"]) == (
        str(ex.run_id),
        str(up.dataset),
        "battle",
        victim.object_key,
        reason,
    )
    # When the bin is compacted again (a retried invocation), Then the catalog's record is its
    # quarantine: the same manifest entry, without reading the input again
    store.delete_many([victim.object_key])
    again = steps.compact(by_table["battle"])
    assert again.quarantined == 1 and manifest_of(store, again).quarantined == [q]
    # And the other table's bin lists no quarantined input
    other = steps.compact(by_table["ship_state"])
    assert other.quarantined == 0 and manifest_of(store, other).quarantined == []
    assert steps.update(ex, plan, [again, other]).committed


def test_a_bin_whose_every_input_is_quarantined_commits_nothing_and_counts_zero(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a table of one fragment, whose object is gone
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    (victim,) = catalog.list_live_files(up.dataset)
    store.delete_many([victim.object_key])
    # When the run goes
    _plan, [result], update = run_all(steps, execution_input(up.dataset))
    # Then the bin is empty: no output, nothing in, its schema from no footer at all
    manifest = manifest_of(store, result)
    assert (manifest.input_ids, manifest.outputs, manifest.rows_in, manifest.bytes_in) == ([], [], 0, 0)
    assert manifest.schema_source == "footers"
    assert (result.rows_in, result.rows_out, result.files_out, result.bytes_out, result.quarantined) == (
        0,
        0,
        0,
        0,
        1,
    )
    # And the commit counts nothing in and nothing out
    assert update.committed
    assert (update.files_in, update.files_out, update.rows_in, update.rows_out, update.bytes_in, update.bytes_out) == (
        0,
        0,
        0,
        0,
        0,
        0,
    )


def test_the_quarantine_reason_names_the_column(steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore) -> None:
    # Given a fragment with a column name that is not UTF-8 (planted before the upload checks)
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    case = by_name("non-UTF-8 name")
    bad = plant(catalog, store, up.dataset, up.owner, case.build(), case.registered_rows)
    _plan, [item] = start(steps, execution_input(up.dataset))
    # When compacted, Then it is quarantined with its error's name, its column and the reason
    [q] = manifest_of(store, steps.compact(item)).quarantined
    assert (q.id, q.reason) == (bad.id, 'UnsupportedInputError: column "map_\\xff\\xfe" has a name that is not UTF-8')


def test_an_input_already_quarantined_keeps_its_first_reason(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a damaged fragment, which another attempt of the same run quarantines (with its own
    # words) after this attempt listed the quarantined inputs and before it reads the bin
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[0]
    store.put(victim.object_key, GARBAGE)
    ex = execution_input(up.dataset)
    _plan, [item] = start(steps, ex)
    first = "CorruptInputError: seen first by another attempt"

    class OtherAttemptFirst(Wrapped):
        def filesystem(self) -> Any:
            if not catalog.list_quarantined(up.dataset):
                catalog.quarantine_file(
                    run_id=ex.run_id, dataset_id=up.dataset, file_id=victim.id, step="Compact", reason=first
                )
            return self._store.filesystem()

    racing = CompactionSteps(catalog, OtherAttemptFirst(store), CONFIG)  # type: ignore[arg-type]
    # When this attempt finds the input bad too, Then the manifest gives the catalog's first reason
    [q] = manifest_of(store, racing.compact(item)).quarantined
    assert (q.id, q.reason) == (victim.id, first)
    assert [f.quarantine_reason for f in catalog.list_quarantined(up.dataset)] == [first]


def test_a_count_the_catalog_gets_wrong_is_quarantined_with_both_counts(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a good file registered with a row count it does not hold
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    data = parquet_bytes(pa.table({"battle_id": pa.array(range(5), pa.int64())}))
    bad = plant(catalog, store, up.dataset, up.owner, data, rows=50)
    # When compacted, Then it is quarantined, the reason giving both counts, and the rest commits
    _plan, _results, update = run_all(steps, execution_input(up.dataset))
    [q] = catalog.list_quarantined(up.dataset)
    assert (q.id, q.quarantine_reason) == (bad.id, "CorruptInputError: row groups hold 5 rows, catalog says 50")
    assert update.committed


def test_a_value_that_cannot_be_cast_is_quarantined_without_reading_it_again(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given two fragments whose timestamps unify to nanoseconds, one of them past what ns holds
    owner, dataset = uuid4(), uuid4()
    far, ns = by_name("timestamp past nanoseconds"), by_name("timestamp in nanoseconds")
    stored = [
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=c.build())
        for c in (far, ns)
    ]
    reads: list[str] = []

    class Counting(Wrapped):
        def get_bytes(self, key: str, **kw: Any) -> bytes:
            reads.append(key)
            return self._store.get_bytes(key, **kw)

    steps = CompactionSteps(catalog, Counting(store), CONFIG)  # type: ignore[arg-type]
    # When compacted, Then the engine's cast error is the verdict: quarantined, never fetched again
    _plan, _results, update = run_all(steps, execution_input(dataset))
    [q] = catalog.list_quarantined(dataset)
    assert q.id == stored[0].fragment_id and (q.quarantine_reason or "").startswith("SchemaCastError: ")
    assert [k for k in reads if "/fragments/" in k] == []
    assert update.committed and update.rows_out == ns.rows


def test_a_read_that_fails_on_bytes_that_read_fine_is_the_stores_error_and_quarantines_nothing(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a good fragment whose first read fails (the engine is sent to an object that is not there)
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[1]

    class FirstReadFails(Wrapped):
        def path_for(self, key: str) -> str:
            return self._store.path_for(key + ".gone" if key == victim.object_key else key)

    flaky = CompactionSteps(catalog, FirstReadFails(store), CONFIG)  # type: ignore[arg-type]
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    # When its bin is compacted, Then the step fails with a retryable store error naming the object
    with pytest.raises(ObjectStoreError) as raised:
        flaky.compact(item)
    message = str(raised.value)
    assert message.startswith(f"reading {victim.object_key} failed (") and message.endswith(
        "), but its bytes read fine: retry"
    )
    # And nothing was quarantined: the retry compacts every row
    assert catalog.list_quarantined(up.dataset) == []
    assert steps.update(ex, plan, [steps.compact(item)]).rows_out == sum(t.num_rows for t in up.rows.values())


def test_an_engine_error_naming_no_input_of_the_bin_fails_the_bin_and_quarantines_nothing(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine that blames an input the bin does not have (a bug, not an input's fault)
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    _plan, [item] = start(steps, execution_input(up.dataset))
    blamed = engine.CorruptInputError("not-an-input-of-this-bin", "nowhere", "confused")

    def confused(*args: Any, **kwargs: Any) -> Any:
        raise blamed

    monkeypatch.setattr(engine, "compact_bin", confused)
    # When the bin is compacted, Then that error fails the bin as it is, and nothing is quarantined
    with pytest.raises(engine.CorruptInputError) as raised:
        steps.compact(item)
    assert raised.value is blamed
    assert catalog.list_quarantined(up.dataset) == []


def test_a_run_that_loses_its_lease_while_quarantining_says_which_input(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim = catalog.list_live_files(up.dataset)[0]
    store.put(victim.object_key, GARBAGE)
    ex = execution_input(up.dataset)
    _plan, [item] = start(steps, ex)
    real = catalog.acquire_lease

    def renew_then_lose(**kw: Any) -> Any:
        got = real(**kw)  # the step's heartbeat succeeds, and right after it another run holds the lease
        sql.execute("UPDATE datasets SET lease_owner = %s, lease_expires_at = now() + interval '1 minute'", (uuid4(),))
        return got

    catalog.acquire_lease = renew_then_lose  # type: ignore[method-assign]
    try:
        with pytest.raises(LeaseLost) as raised:
            steps.compact(item)
    finally:
        catalog.acquire_lease = real  # type: ignore[method-assign]
    assert str(raised.value).startswith(f"run {ex.run_id} cannot quarantine {victim.id}: ")
    assert str(raised.value) != f"run {ex.run_id} cannot quarantine {victim.id}: "
    assert catalog.list_quarantined(up.dataset) == []


# -- the bin's schema from the catalog ---------------------------------------------------------------


def test_fragments_of_one_row_take_their_schema_from_the_catalog(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    owner, dataset = uuid4(), uuid4()
    for i in range(3):
        t = pa.table({"battle_id": pa.array([i], pa.int64())})
        store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=parquet_bytes(t))
    _plan, results, update = run_all(steps, execution_input(dataset))
    assert [manifest_of(store, r).schema_source for r in results] == ["catalog"]
    assert update.rows_out == 3


def test_an_input_planned_without_a_fingerprint_means_reading_footers_first(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a bin one of whose inputs came without its schema's fingerprint (planned before they
    # were recorded), the others' schemas known to the catalog
    up = upload_fragments(catalog, store, fragments=3, tables=("battle",))
    ex = execution_input(up.dataset)
    plan, [item] = start(steps, ex)
    inputs = list(item.bin.inputs or [])
    inputs[1] = inputs[1].model_copy(update={"schema_fingerprint": None})
    old = item.model_copy(update={"bin": item.bin.model_copy(update={"inputs": inputs})})
    # When compacted, Then the schema came from the footers, and every row is there
    result = steps.compact(old)
    assert manifest_of(store, result).schema_source == "footers"
    steps.update(ex, plan, [result])
    assert row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(up.rows["battle"])  # type: ignore[arg-type]


def test_an_unreadable_schema_in_the_catalog_is_logged_and_the_footers_read(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection, logs: io.StringIO
) -> None:
    # Given a catalog whose record of the fragments' schema is damaged
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    damaged = "AAAA"
    sql.execute("UPDATE arrow_schemas SET ipc_base64 = %s", (damaged,))
    with pytest.raises((ValueError, pa.ArrowInvalid)) as expected:
        engine.schema_from_base64(damaged)
    # When compacted, Then the footers were read, and the damage logged with its error
    _plan, results, update = run_all(steps, execution_input(up.dataset))
    assert [manifest_of(store, r).schema_source for r in results] == ["footers"] and update.committed
    [logged] = log_records(logs, "unreadable schema in the catalog; reading footers")
    assert logged["error"] == str(expected.value)


def test_a_schema_the_inputs_do_not_fit_is_logged_with_the_run_table_and_bin(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection, logs: io.StringIO
) -> None:
    # Given a catalog whose record of every fragment's schema has lost a column
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    real = engine.schema_from_base64(sql.execute("SELECT ipc_base64 FROM arrow_schemas").fetchone()[0])  # type: ignore[index]
    sql.execute(
        "UPDATE arrow_schemas SET ipc_base64 = %s",
        (engine.schema_to_base64(real.remove(real.get_field_index("rank"))),),
    )
    ex = execution_input(up.dataset)
    # When compacted, Then the miss is logged, naming the run, the table and the bin
    _plan, results, _update = run_all(steps, ex)
    assert [manifest_of(store, r).schema_source for r in results] == ["catalog-missed"]
    [logged] = log_records(
        logs, "an input did not fit the catalog's schema; the bin was compacted again from its footers"
    )
    assert (logged["runId"], logged["table"], logged["bin"]) == (str(ex.run_id), "battle", 0)


# -- Update -----------------------------------------------------------------------------------------


def _results(n: int, table: str = "battle") -> list[CompactResult]:
    return [
        CompactResult(
            table=table, index=i, manifest_key=f"nowhere/{i}", rows_in=0, rows_out=0, files_out=0, bytes_out=0
        )
        for i in range(n)
    ]


def _plan(ex: ExecutionInput, bins: int) -> PlanResult:
    return PlanResult(
        plan_key=keys.plan_prefix(ex.run_id),
        items_key=keys.plan_items_key(ex.run_id),
        results_prefix=keys.map_results_prefix(ex.run_id),
        bin_count=bins,
        files_planned=0,
        bytes_planned=0,
        rows_planned=0,
    )


def test_update_refuses_results_that_do_not_match_the_plan(steps: CompactionSteps) -> None:
    ex = execution_input(uuid4())
    twenty, twenty_one = _results(20), _results(21)
    listed = [("battle", i) for i in range(20)]
    # A bin missing: the results are listed, all 20 of them
    with pytest.raises(PlanMismatch) as raised:
        steps.update(ex, _plan(ex, 21), twenty)
    assert str(raised.value) == f"planned 21 bins but got results for {listed}"
    # More than 20: the first 20, then "..."
    with pytest.raises(PlanMismatch) as raised:
        steps.update(ex, _plan(ex, 22), twenty_one)
    assert str(raised.value) == f"planned 22 bins but got results for {listed}..."
    # As many as planned, but one bin twice and one missing
    with pytest.raises(PlanMismatch) as raised:
        steps.update(ex, _plan(ex, 2), [twenty[0], twenty[0]])
    assert str(raised.value) == f"planned 2 bins but got results for {[('battle', 0), ('battle', 0)]}"


def test_update_reads_32_manifests_at_once_and_records_the_compact_time_to_four_places(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, clock: FakeClock
) -> None:
    # Given a run of 32 (empty) bins whose manifests say each took 0.00001234 s
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    ex = execution_input(up.dataset)
    steps.validate(ex)
    results = _results(32)
    for r in results:
        key = keys.manifest_key(ex.run_id, r.table, r.index)
        manifest = BinManifest(
            run_id=ex.run_id,
            table=r.table,
            index=r.index,
            input_ids=[],
            outputs=[],
            rows_in=0,
            bytes_in=0,
            seconds=0.00001234,
        )
        store.put(key, manifest.model_dump_json(by_alias=True).encode())
    results = [r.model_copy(update={"manifest_key": keys.manifest_key(ex.run_id, r.table, r.index)}) for r in results]
    together = threading.Barrier(32, timeout=30)

    class AllAtOnce(Wrapped):
        def get_bytes(self, key: str, **kw: Any) -> bytes:
            together.wait()  # returns only once 32 reads are in flight
            return self._store.get_bytes(key, **kw)

    parallel = CompactionSteps(catalog, AllAtOnce(store), CONFIG)  # type: ignore[arg-type]
    # When Update reads them, Then all 32 reads are in flight at once, and the commit goes through
    update = parallel.update(ex, _plan(ex, 32), results)
    assert update.committed
    # And the Compact time is their sum to four places
    assert run_row(catalog, up.dataset, ex.run_id).step_timings["Compact"] == round(32 * 0.00001234, 4)


# -- the Compact Map's export: compact_results, and the failure path's _failed_bin --------------------

MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:dev-kc-compaction/Compact:0f3e4a9c"


def _export(store: S3ObjectStore, prefix: str, files: dict[str, list[dict[str, Any]]]) -> str:
    """A Map Run's export as the ResultWriter writes it: <prefix>/<map run>/manifest.json listing
    <STATUS>_0.json files, each a JSON array of child executions. Returns the manifest's key."""
    base = f"{prefix}/0f3e4a9c"
    listed: dict[str, list[dict[str, Any]]] = {}
    for status, entries in files.items():
        key = f"{base}/{status}_0.json"
        if entries:
            store.put(key, json.dumps(entries).encode())
        listed[status] = [{"Key": key, "Size": 1}] if entries else []
    manifest = f"{base}/manifest.json"
    store.put(
        manifest, json.dumps({"DestinationBucket": store.bucket, "MapRunArn": MAP_RUN, "ResultFiles": listed}).encode()
    )
    return manifest


def _map_output(bucket: str, key: str) -> MapRunOutput:
    return MapRunOutput.model_validate({"MapRunArn": MAP_RUN, "ResultWriterDetails": {"Bucket": bucket, "Key": key}})


def test_compact_results_reads_every_succeeded_childs_output(steps: CompactionSteps, store: S3ObjectStore) -> None:
    # Given an export whose succeeded children's outputs are JSON text (as AWS writes them) or objects
    one, two, three = _results(3)
    key = _export(
        store,
        "plans/run/map-results",
        {
            "SUCCEEDED": [
                {"Status": "SUCCEEDED", "Output": one.model_dump_json(by_alias=True)},
                {"Status": "SUCCEEDED", "Output": two.model_dump(mode="json", by_alias=True)},
                {"Status": "SUCCEEDED", "Output": three.model_dump_json(by_alias=True)},
            ],
            "FAILED": [],
            "PENDING": [],
        },
    )
    # When read, Then every child's result is there, in order
    assert steps.compact_results(_map_output(store.bucket, key)) == [one, two, three]


@pytest.mark.parametrize("status", ["FAILED", "PENDING"])
def test_compact_results_refuses_an_export_with_failed_or_pending_children(
    steps: CompactionSteps, store: S3ObjectStore, status: str
) -> None:
    (one,) = _results(1)
    key = _export(
        store,
        "plans/run/map-results",
        {"SUCCEEDED": [{"Output": one.model_dump_json(by_alias=True)}], status: [{"Status": status}]},
    )
    with pytest.raises(PlanMismatch) as raised:
        steps.compact_results(_map_output(store.bucket, key))
    assert str(raised.value) == f"Map Run {MAP_RUN} has failed or pending children"


def test_compact_results_refuses_an_export_in_another_bucket(steps: CompactionSteps, store: S3ObjectStore) -> None:
    with pytest.raises(PlanMismatch) as raised:
        steps.compact_results(_map_output("somebody-elses-bucket", "plans/run/map-results/x/manifest.json"))
    assert str(raised.value) == f"the Map Run wrote its results to somebody-elses-bucket, not to {store.bucket}"


CHILD_CAUSE = json.dumps({"errorMessage": "the bin's catalog call timed out", "errorType": "CatalogUnavailable"})


def _failed_compact(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, *, step: str = "Compact", slash: str = ""
) -> tuple[ExecutionInput, Any]:
    """A run whose Compact Map failed: its export has a succeeded child and a failed one (the first
    failed entry without an error, the next with the child's own error and cause)."""
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    ex = execution_input(up.dataset)
    steps.validate(ex)
    plan = _plan(ex, 2)
    (one,) = _results(1)
    _export(
        store,
        plan.results_prefix,
        {
            "FAILED": [{"Status": "FAILED"}, {"Status": "FAILED", "Error": "CatalogUnavailable", "Cause": CHILD_CAUSE}],
            "SUCCEEDED": [{"Status": "SUCCEEDED", "Output": one.model_dump_json(by_alias=True)}],
        },
    )
    plan = plan.model_copy(update={"results_prefix": plan.results_prefix + slash})
    failure = {step: StepError(error="States.ExceedToleratedFailureThreshold", cause="a child failed")}
    return ex, steps.record_failure(FailureInput(execution=ex, failure=failure, plan=plan))


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_failed_compact_map_is_recorded_with_its_failed_childs_error(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, slash: str
) -> None:
    ex, envelope = _failed_compact(steps, catalog, store, slash=slash)
    text = "CatalogUnavailable: the bin's catalog call timed out"
    assert (envelope.error_step, envelope.error, envelope.cause) == ("Compact", text, CHILD_CAUSE)
    run = run_row(catalog, ex.message.dataset_id, ex.run_id)
    assert (run.status, run.error_step, run.error) == ("failed", "Compact", text)


def test_another_steps_failure_is_recorded_with_its_own_error_even_with_a_plan(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    _ex, envelope = _failed_compact(steps, catalog, store, step="Update")
    assert (envelope.error_step, envelope.error, envelope.cause) == (
        "Update",
        "States.ExceedToleratedFailureThreshold: a child failed",
        "a child failed",
    )


def test_an_unreadable_export_is_logged_and_the_maps_own_error_recorded(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, logs: io.StringIO
) -> None:
    up = upload_fragments(catalog, store, fragments=1, tables=("battle",))
    ex = execution_input(up.dataset)
    steps.validate(ex)
    plan = _plan(ex, 1)
    store.put(f"{plan.results_prefix}/0f3e4a9c/manifest.json", b"not json")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(b"not json")
    failure = {"Compact": StepError(error="States.ExceedToleratedFailureThreshold", cause=None)}
    envelope = steps.record_failure(FailureInput(execution=ex, failure=failure, plan=plan))
    # The Map's own error, without a cause: the error's name alone
    assert (envelope.error, envelope.cause) == ("States.ExceedToleratedFailureThreshold", None)
    [logged] = log_records(logs, "could not read the failed Map Run's export")
    assert logged["error"] == str(expected.value)


def test_a_failure_of_a_run_never_created_still_makes_its_envelope(steps: CompactionSteps) -> None:
    # Given the failure of a message naming an unknown dataset (Validate never created the run),
    # whose cause is text, not Lambda's JSON
    ex = execution_input(uuid4())
    failure = {"Validate": StepError(error="DatasetNotFound", cause="unknown dataset, see the message")}
    # When recorded, Then the envelope carries the message, its ids, and the error with its cause
    envelope = steps.record_failure(FailureInput(execution=ex, failure=failure))
    assert envelope.message == ex.message.to_json_dict()
    assert (envelope.body, envelope.message_id, envelope.dataset_id, envelope.run_id) == (
        ex.body,
        ex.message_id,
        ex.message.dataset_id,
        ex.run_id,
    )
    assert (envelope.error_step, envelope.error, envelope.cause) == (
        "Validate",
        "DatasetNotFound: unknown dataset, see the message",
        "unknown dataset, see the message",
    )
