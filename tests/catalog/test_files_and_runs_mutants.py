"""Files', quarantine's and runs' SQL conditions that make mutate-sql found untested (migrations 0002,
0008 and 0011): which garbage a mark deletes, one table's live files, and the row locks that keep
a readmission and a run's status serialized with the writes racing them."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg

from fusou_compaction.catalog.client import Catalog

from .conftest import World
from .interleave import one_after_another, slow_down
from .test_runs_mutants import _record


def test_marking_objects_deleted_marks_those_named_and_no_other_garbage(world: World, sql: psycopg.Connection) -> None:
    # Given two replaced objects whose grace periods are over
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
    )
    sql.execute("UPDATE dataset_files SET delete_after = now() - interval '1 second' WHERE removed_at IS NOT NULL")
    assert len(world.catalog.list_garbage()) == 2
    # When the sweep has deleted one of them
    assert world.catalog.mark_objects_deleted([frags[0].id]) == 1
    # Then the other is still garbage, to be deleted
    assert [g.id for g in world.catalog.list_garbage()] == [frags[1].id]


def test_the_live_files_of_one_table_are_that_tables_only(world: World) -> None:
    # Given live fragments of two tables
    battle = world.fragment(table="battle")
    world.fragment(table="port")
    # When one table's live files are listed, Then they are its own
    assert [f.id for f in world.catalog.list_live_files(world.dataset, "battle")] == [battle.id]
    assert {f.table_name for f in world.catalog.list_live_files(world.dataset)} == {"battle", "port"}


def test_a_readmission_during_an_upload_leaves_the_counters_exact(
    catalog: Catalog, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a quarantined fragment (its run finished), and inserts of files slowed down: an upload
    # is being registered, holding its dataset's row
    world = World(catalog, uuid4(), uuid4())
    bad = world.fragment()
    run = world.running_run()
    catalog.quarantine_file(run_id=run, dataset_id=world.dataset, file_id=bad.id, step="Compact", reason="corrupt")
    catalog.record_run_status(run, "failed")
    slow_down(sql, "dataset_files", "INSERT")

    def upload(_: psycopg.Connection) -> Any:
        return world.fragment().id

    def readmit(conn: psycopg.Connection) -> Any:
        row = conn.execute("SELECT readmit_quarantined(%s)", (bad.id,)).fetchone()
        return row[0]["readmitted"] if row else None

    # When an operator readmits the quarantined fragment meanwhile
    uploaded, readmitted = one_after_another(database_url, upload, readmit)
    # Then the readmission waited for the upload (its dataset's row first), so the counters it
    # wrote count both fragments; without that wait it wrote counts from before the upload
    assert uploaded is not None and readmitted is True
    counters = "SELECT live_fragments, live_rows, compaction_needed FROM datasets WHERE id = %s"
    assert sql.execute(counters, (world.dataset,)).fetchone() == (2, 20, True)


def test_a_run_reported_running_while_its_failure_is_recorded_stays_failed(
    world: World, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a running run, and updates of runs slowed down: its failure is being recorded
    world.fragment()
    run = world.running_run()
    slow_down(sql, "compaction_runs", "UPDATE")
    # When a late "running" (a retried step) is reported meanwhile
    failed, late = one_after_another(database_url, _record(run, "failed"), _record(run, "running"))
    # Then it waits on the run's row, finds the run failed and changes nothing: a terminal state
    # is never left ("running" takes no dataset lock, so only the run row's lock orders the two)
    assert (failed, late) == (True, False)
    assert sql.execute("SELECT status FROM compaction_runs WHERE id = %s", (run,)).fetchone() == ("failed",)
