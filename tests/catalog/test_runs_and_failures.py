"""Run status transitions, failure records and housekeeping."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, InvalidCatalogArgument

from .conftest import World


def test_begin_run_is_idempotent_on_the_run_id(world: World) -> None:
    world.fragment()
    run = uuid4()
    a = world.catalog.begin_run(run_id=run, dataset_id=world.dataset, trigger="scheduled", execution_id="x-1")
    b = world.catalog.begin_run(run_id=run, dataset_id=world.dataset, trigger="scheduled", execution_id="x-1")
    assert a == b and a.status == "queued"


def test_begin_run_for_an_unknown_dataset_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(CatalogNotFound):
        catalog.begin_run(run_id=uuid4(), dataset_id=uuid4(), trigger="manual")


def test_an_unknown_trigger_is_an_invalid_argument(world: World) -> None:
    world.fragment()
    with pytest.raises(InvalidCatalogArgument):
        world.catalog.begin_run(run_id=uuid4(), dataset_id=world.dataset, trigger="whenever")  # type: ignore[arg-type]


def test_terminal_states_never_change_and_failure_frees_the_lease(world: World) -> None:
    # Given a running run
    world.fragment()
    run = world.running_run()
    # When it fails at Compact
    failed = world.catalog.record_run_status(run, "failed", {"error_step": "Compact", "error": "boom"})
    # Then it is failed at that step, the lease is free, and a late "running" is ignored
    late = world.catalog.record_run_status(run, "running")
    assert failed.changed and (failed.status, failed.error_step, failed.error) == ("failed", "Compact", "boom")
    assert not late.changed and late.status == "failed"
    assert world.catalog.get_dataset(world.dataset).lease_owner is None


def test_step_timings_accumulate(world: World) -> None:
    world.fragment()
    run = world.running_run()
    world.catalog.record_run_status(run, "running", {"step_timings": {"Validate": 0.1}})
    r = world.catalog.record_run_status(run, "running", {"step_timings": {"GetMetadata": 0.2}})
    assert r.step_timings == {"Validate": 0.1, "GetMetadata": 0.2}


def test_success_is_only_reachable_by_commit(world: World) -> None:
    world.fragment()
    run = world.running_run()
    with pytest.raises(InvalidCatalogArgument):
        world.catalog.record_run_status(run, "succeeded")


def test_status_of_an_unknown_run_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(CatalogNotFound):
        catalog.record_run_status(uuid4(), "running")


def test_a_failure_is_recorded_once_per_message_and_fails_its_run(world: World) -> None:
    # Given a running run whose message reached the DLQ (delivered twice)
    world.fragment()
    run = world.running_run()
    args = {
        "source": "dlq",
        "error": "S3 object missing",
        "message_id": "m-1",
        "dataset_id": world.dataset,
        "run_id": run,
        "error_step": "Compact",
        "body": '{"datasetId": "x"}',
    }
    first = world.catalog.record_failure(**args)  # type: ignore[arg-type]
    second = world.catalog.record_failure(**args)  # type: ignore[arg-type]
    # Then one record, newest first in the listing, run failed at the step, lease freed
    assert first.recorded and not second.recorded
    failures = world.catalog.list_recent_failures()
    assert [(f.message_id, f.error_step, f.body) for f in failures] == [("m-1", "Compact", '{"datasetId": "x"}')]
    status = world.catalog.dataset_status(world.dataset)
    assert (status.runs[0].status, status.runs[0].error_step) == ("failed", "Compact")
    assert status.dataset.lease_owner is None


def test_failures_without_a_dataset_are_recorded(catalog: Catalog) -> None:
    catalog.record_failure(source="dlq", error="bad JSON", message_id="m-2", body="{not json")
    catalog.record_failure(source="workflow", error="later")
    assert [f.error for f in catalog.list_recent_failures()] == ["later", "bad JSON"]


def test_an_unknown_failure_source_is_invalid(catalog: Catalog) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.record_failure(source="email", error="x")


def test_expired_leases_are_swept_and_their_runs_failed(world: World, sql: psycopg.Connection) -> None:
    world.fragment()
    run = world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 minute'")
    swept = world.catalog.sweep_expired_leases()
    assert [(s.dataset_id, s.run_id) for s in swept] == [(world.dataset, run)]
    status = world.catalog.dataset_status(world.dataset)
    assert status.runs[0].status == "failed" and "lease expired" in (status.runs[0].error or "")
    assert status.dataset.lease_owner is None


def test_replaced_objects_become_garbage_only_after_the_grace_period(world: World, sql: psycopg.Connection) -> None:
    frags = [world.fragment()]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run,
        dataset_id=world.dataset,
        removed=[frags[0].id],
        outputs=[world.output_for(run, frags)],
        grace_seconds=3600,
    )
    assert world.catalog.list_garbage() == []
    sql.execute("UPDATE dataset_files SET delete_after = now() - interval '1 second' WHERE removed_at IS NOT NULL")
    garbage = world.catalog.list_garbage()
    assert [g.object_key for g in garbage] == [frags[0].object_key]
    assert world.catalog.mark_objects_deleted([g.id for g in garbage]) == 1
    assert world.catalog.list_garbage() == []


def test_orphans_exclude_catalogued_keys_and_outputs_of_live_runs(world: World) -> None:
    frag = world.fragment()
    live_run = world.running_run()
    dead_run = uuid4()
    in_flight = keys.compacted_key(world.dataset, "battle", live_run, 0)
    crashed = keys.compacted_key(world.dataset, "battle", dead_run, 0)
    stray = keys.fragment_key(world.dataset, "battle", "b" * 64)
    assert world.catalog.find_orphans([frag.object_key, in_flight, crashed, stray]) == sorted([crashed, stray])


def test_dataset_status_shows_files_and_runs_newest_first(world: World) -> None:
    world.fragment(table="battle")
    world.fragment(table="ship_state")
    r1 = world.running_run()
    world.catalog.record_run_status(r1, "skipped", {"status_reason": "test"})
    r2 = world.running_run()
    status = world.catalog.dataset_status(world.dataset)
    assert {f.table_name for f in status.files} == {"battle", "ship_state"}
    assert [r.id for r in status.runs] == [r2, r1]
