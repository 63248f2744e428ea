"""Each step on its own, against the real catalog (PostgreSQL) and S3 (moto's server)."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pyarrow as pa
import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.engine import schema_from_base64, schema_to_base64
from fusou_compaction.logic.steps import CompactionSteps, DatasetNotFound, LeaseLost, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import BinManifest, CompactItem, FailureInput, StepError

from ..forged_parquet import rust_zero_count_parquet
from .conftest import execution_input, live_rows, row_multiset, upload_fragments


def _run_all(steps: CompactionSteps, ex):  # type: ignore[no-untyped-def]
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    results = [
        steps.compact(CompactItem(run_id=ex.run_id, dataset_id=ex.message.dataset_id, plan_key=plan.plan_key, bin=b))
        for b in plan.bins
    ]
    return plan, results, steps.update(ex, plan, results)


def test_a_run_compacts_every_table_and_keeps_every_row(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given fragments of two tables
    up = upload_fragments(catalog, store, fragments=5)
    ex = execution_input(up.dataset)
    # When the four steps run
    _plan, results, update = _run_all(steps, ex)
    # Then each table is one compacted file holding exactly the uploaded rows
    assert update.committed and not update.compaction_needed
    for table, uploaded in up.rows.items():
        files = catalog.list_live_files(up.dataset, table)
        assert [f.kind for f in files] == ["compacted"]
        assert row_multiset(live_rows(catalog, store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]
    assert update.rows_in == update.rows_out == sum(t.num_rows for t in up.rows.values())
    assert {r.table for r in results} == set(up.rows)


def test_validate_refuses_an_unknown_dataset(steps: CompactionSteps) -> None:
    with pytest.raises(DatasetNotFound):
        steps.validate(execution_input(uuid4()))


def test_validate_skips_when_another_run_holds_the_lease(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    up = upload_fragments(catalog, store, fragments=1)
    first, second = execution_input(up.dataset), execution_input(up.dataset)
    assert steps.validate(first).action == "compact"
    result = steps.validate(second)
    assert result.action == "skip" and "lease held" in (result.reason or "")
    run = {r.id: r for r in catalog.dataset_status(up.dataset).runs}[second.run_id]
    assert run.status == "skipped"


def test_validate_skips_a_dataset_without_pending_fragments(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    up = upload_fragments(catalog, store, fragments=1)
    _run_all(steps, execution_input(up.dataset))
    again = steps.validate(execution_input(up.dataset))
    assert again.action == "skip" and again.reason == "nothing to compact"


def test_a_redelivered_message_after_success_is_skipped(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    up = upload_fragments(catalog, store, fragments=1)
    ex = execution_input(up.dataset, message_id="same-message")
    _run_all(steps, ex)
    upload_fragments(catalog, store, fragments=1, seed=7, dataset=up.dataset, owner=up.owner)
    result = steps.validate(ex)
    assert result.action == "skip" and "already succeeded" in (result.reason or "")


def test_a_large_plan_travels_through_s3(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given bins too large to inline in their Map items (threshold lowered to force it)
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, inline_bin_bytes=100))
    up = upload_fragments(catalog, store, fragments=3)
    ex = execution_input(up.dataset)
    steps.validate(ex)
    # When planning, Then the state carries references and the bins are in S3
    plan = steps.get_metadata(ex)
    assert plan.plan_key == keys.plan_prefix(ex.run_id)
    assert all(b.inputs is None for b in plan.bins)
    assert all(store.exists(keys.plan_bin_key(ex.run_id, b.table, b.index)) for b in plan.bins)
    # And Compact resolves them
    results = [
        steps.compact(CompactItem(run_id=ex.run_id, dataset_id=up.dataset, plan_key=plan.plan_key, bin=b))
        for b in plan.bins
    ]
    assert steps.update(ex, plan, results).rows_out == sum(t.num_rows for t in up.rows.values())


def test_a_retried_compact_overwrites_only_its_own_keys(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    ex = execution_input(up.dataset)
    steps.validate(ex)
    plan = steps.get_metadata(ex)
    item = CompactItem(run_id=ex.run_id, dataset_id=up.dataset, plan_key=plan.plan_key, bin=plan.bins[0])
    steps.compact(item)
    before = sorted(o.key for o in store.list_objects(keys.dataset_prefix(up.dataset)))
    steps.compact(item)
    after = sorted(o.key for o in store.list_objects(keys.dataset_prefix(up.dataset)))
    assert before == after


def test_update_twice_commits_once(steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore) -> None:
    up = upload_fragments(catalog, store, fragments=2)
    ex = execution_input(up.dataset)
    plan, results, first = _run_all(steps, ex)
    again = steps.update(ex, plan, results)
    assert first.committed and not first.already_committed and again.already_committed


def test_compact_stops_when_the_lease_was_taken_over(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, database_url: str
) -> None:
    up = upload_fragments(catalog, store, fragments=1)
    ex = execution_input(up.dataset)
    steps.validate(ex)
    plan = steps.get_metadata(ex)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    catalog.acquire_lease(dataset_id=up.dataset, run_id=uuid4(), lease_seconds=60)
    with pytest.raises(LeaseLost):
        steps.compact(CompactItem(run_id=ex.run_id, dataset_id=up.dataset, plan_key=plan.plan_key, bin=plan.bins[0]))


def test_a_missing_object_is_quarantined_and_the_rest_of_its_bin_compacts(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given two fragments of a table, one of whose objects is gone
    up = upload_fragments(catalog, store, fragments=2, tables=("battle",))
    victim, other = catalog.list_live_files(up.dataset)[1], catalog.list_live_files(up.dataset)[0]
    store.delete_many([victim.object_key])
    # When the run compacts the table
    _plan, results, update = _run_all(steps, execution_input(up.dataset))
    # Then the missing one is quarantined, named, and the other one's rows are compacted
    (manifest,) = _manifests(store, results)
    assert manifest.input_ids == [other.id] and [q.id for q in manifest.quarantined] == [victim.id]
    [quarantined] = catalog.list_quarantined(up.dataset)
    assert quarantined.quarantine_reason == "CorruptInputError: its object is missing from the store"
    assert update.committed and update.rows_in == update.rows_out == other.row_count


def test_record_failure_fails_the_run_at_its_step_and_frees_the_lease(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    up = upload_fragments(catalog, store, fragments=1)
    ex = execution_input(up.dataset)
    steps.validate(ex)
    cause = '{"errorMessage": "object gone", "errorType": "CorruptInputError"}'
    envelope = steps.record_failure(
        FailureInput(execution=ex, failure={"Compact": StepError(error="CorruptInputError", cause=cause)})
    )
    status = catalog.dataset_status(up.dataset)
    assert (status.runs[0].status, status.runs[0].error_step) == ("failed", "Compact")
    assert status.runs[0].error == "CorruptInputError: object gone"
    assert status.dataset.lease_owner is None
    assert (envelope.error_step, envelope.body, envelope.message_id) == ("Compact", ex.body, ex.message_id)


def _manifests(store: S3ObjectStore, results) -> list[BinManifest]:  # type: ignore[no-untyped-def]
    return [BinManifest.model_validate_json(store.get_bytes(r.manifest_key)) for r in results]


def test_compact_takes_the_bins_schema_from_the_catalog_and_records_its_outputs(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given fragments uploaded through the service (which records each schema)
    up = upload_fragments(catalog, store, fragments=6, rows=300, tables=("battle",))
    ex = execution_input(up.dataset)

    # When a run compacts them
    _plan, results, update = _run_all(steps, ex)

    # Then the bin's schema came from the catalog (each input read once), every row is there, and
    # the output's schema is recorded too
    (manifest,) = _manifests(store, results)
    assert manifest.schema_source == "catalog"
    assert update.committed
    assert row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(up.rows["battle"])  # type: ignore[arg-type]
    (output,) = catalog.list_live_files(up.dataset, "battle")
    assert list(catalog.get_schemas([output.schema_fingerprint])) == [output.schema_fingerprint]

    # And a later run, merging that small compacted file with new fragments, finds every schema too
    more = upload_fragments(
        catalog, store, fragments=3, rows=300, tables=("battle",), seed=7, dataset=up.dataset, owner=up.owner
    )
    _plan, results, _update = _run_all(steps, execution_input(up.dataset))
    assert [m.schema_source for m in _manifests(store, results)] == ["catalog"]
    expected = pa.concat_tables([up.rows["battle"], more.rows["battle"]], promote_options="permissive")
    assert row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(expected)  # type: ignore[arg-type]


def test_a_schema_the_catalog_lacks_means_reading_footers_first(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given fragments whose schemas the catalog does not have (uploaded before migration 0004)
    up = upload_fragments(catalog, store, fragments=4, rows=200, tables=("battle",))
    sql.execute("DELETE FROM arrow_schemas")

    # When compacted, Then the engine read the footers first, and no row is lost
    _plan, results, _update = _run_all(steps, execution_input(up.dataset))
    assert [m.schema_source for m in _manifests(store, results)] == ["footers"]
    assert row_multiset(live_rows(catalog, store, up.dataset, "battle")) == row_multiset(up.rows["battle"])  # type: ignore[arg-type]


def test_a_wrong_schema_in_the_catalog_costs_time_not_rows(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a catalog whose record of every fragment's schema has lost a column
    up = upload_fragments(catalog, store, fragments=4, rows=200, tables=("battle",))
    real = schema_from_base64(sql.execute("SELECT ipc_base64 FROM arrow_schemas").fetchone()[0])  # type: ignore[index]
    sql.execute(
        "UPDATE arrow_schemas SET ipc_base64 = %s", [schema_to_base64(real.remove(real.get_field_index("rank")))]
    )

    # When compacted, Then the bin was done again from its footers, with every row and column
    _plan, results, _update = _run_all(steps, execution_input(up.dataset))
    assert [m.schema_source for m in _manifests(store, results)] == ["catalog-missed"]
    rows = live_rows(catalog, store, up.dataset, "battle")
    assert rows is not None and "rank" in rows.column_names
    assert row_multiset(rows) == row_multiset(up.rows["battle"])


def test_rust_written_fragments_keep_every_row_through_upload_and_a_run(
    steps: CompactionSteps, catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given three fragments as FUSOU's early Rust uploader wrote them (file-level num_rows 0,
    # 6 rows in the row group), stored through the upload logic the API and the CLI share
    owner, dataset = uuid4(), uuid4()
    stored = [
        store_fragment(
            catalog,
            store,
            owner_id=owner,
            dataset_id=dataset,
            table="battle",
            data=rust_zero_count_parquet(6, start=i * 6),
        )
        for i in range(3)
    ]
    # Then each is registered with the rows its row group holds
    assert [s.row_count for s in stored] == [6, 6, 6]
    # When the four steps run
    _plan, _results, update = _run_all(steps, execution_input(dataset))
    # Then the table is still there with all 18 rows, read back from the objects
    assert update.committed and update.rows_in == update.rows_out == 18
    status = catalog.dataset_status(dataset)
    assert {f.table_name for f in status.files} == {"battle"}
    rows = live_rows(catalog, store, dataset, "battle")
    assert rows is not None and sorted(rows.column("battle_id").to_pylist()) == list(range(18))


def test_reuploading_compacted_and_deleted_bytes_writes_no_object(catalog: Catalog, store: S3ObjectStore) -> None:
    from datetime import timedelta

    from fusou_compaction.logic.scheduled import housekeeping

    # Given a fragment compacted by a run whose replaced objects are swept at once (no grace)
    owner, dataset = uuid4(), uuid4()
    data = rust_zero_count_parquet(6)
    first = store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=data)
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, grace_period_seconds=0))
    _run_all(steps, execution_input(dataset))
    housekeeping(catalog, store, orphan_min_age=timedelta(hours=6))
    fragments = [o.key for o in store.list_objects(keys.dataset_prefix(dataset)) if "/fragments/" in o.key]
    assert fragments == []
    # When the same bytes are uploaded again
    again = store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=data)
    # Then they are the known fragment, and no object is written back
    assert again.duplicate and again.fragment_id == first.fragment_id
    assert [o.key for o in store.list_objects(keys.dataset_prefix(dataset)) if "/fragments/" in o.key] == []
    assert catalog.get_dataset(dataset).live_fragments == 0
