"""record_run_status's conditions that mutation testing (make mutate-sql) found untested."""

from __future__ import annotations

from uuid import UUID

import psycopg

from .conftest import World
from .interleave import one_after_another, slow_down


def _record(run: UUID, status: str):  # type: ignore[no-untyped-def]
    def call(conn: psycopg.Connection) -> bool:
        row = conn.execute("SELECT record_run_status(%s, %s)", (run, status)).fetchone()
        assert row is not None
        return bool(row[0]["changed"])

    return call


def test_two_outcomes_recorded_at_once_leave_the_first_and_count_once(
    world: World, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a running run, and updates of runs slowed down (the first outcome is being written
    # while the second arrives)
    world.fragment()
    run = world.running_run()
    slow_down(sql, "compaction_runs", "UPDATE")
    # When 'skipped' and then 'failed' are recorded for it at once
    first, second = one_after_another(database_url, _record(run, "skipped"), _record(run, "failed"))
    # Then the second waited on the run's row, found it finished and changed nothing
    assert (first, second) == (True, False)
    assert sql.execute("SELECT status FROM compaction_runs WHERE id = %s", (run,)).fetchone() == ("skipped",)
    assert sql.execute("SELECT consecutive_failures FROM datasets").fetchone() == (0,)


def test_a_running_run_is_never_set_back_to_queued(world: World, sql: psycopg.Connection) -> None:
    world.fragment()
    run = world.running_run()
    assert _record(run, "queued")(sql) is False
    assert sql.execute("SELECT status FROM compaction_runs WHERE id = %s", (run,)).fetchone() == ("running",)


def test_a_queued_run_recorded_queued_again_takes_the_details(world: World, sql: psycopg.Connection) -> None:
    # Given a run just begun (queued)
    world.fragment()
    run = world.catalog.begin_run(run_id=UUID(int=7), dataset_id=world.dataset, trigger="manual").id
    # When 'queued' is recorded again with its execution id (a redelivered start)
    row = sql.execute(
        "SELECT record_run_status(%s, 'queued', '{\"execution_id\": \"exec-1\"}'::jsonb)", (run,)
    ).fetchone()
    # Then it is a change, and the details are kept
    assert row is not None and row[0]["changed"] is True
    assert sql.execute("SELECT status, execution_id FROM compaction_runs").fetchone() == ("queued", "exec-1")


def test_a_run_is_started_when_it_runs_and_finished_only_when_it_ends(world: World, sql: psycopg.Connection) -> None:
    world.fragment()
    run = world.catalog.begin_run(run_id=UUID(int=8), dataset_id=world.dataset, trigger="manual").id
    times = "SELECT started_at IS NOT NULL, finished_at IS NOT NULL FROM compaction_runs WHERE id = %s"
    assert sql.execute(times, (run,)).fetchone() == (False, False)
    _record(run, "running")(sql)
    assert sql.execute(times, (run,)).fetchone() == (True, False)
    _record(run, "failed")(sql)
    assert sql.execute(times, (run,)).fetchone() == (True, True)


def test_a_run_skipped_before_it_ran_has_no_start(world: World, sql: psycopg.Connection) -> None:
    world.fragment()
    run = world.catalog.begin_run(run_id=UUID(int=9), dataset_id=world.dataset, trigger="manual").id
    _record(run, "skipped")(sql)
    times = "SELECT started_at IS NOT NULL, finished_at IS NOT NULL FROM compaction_runs WHERE id = %s"
    assert sql.execute(times, (run,)).fetchone() == (False, True)


def test_a_run_skipped_for_a_lease_held_elsewhere_leaves_that_lease_alone(
    world: World, sql: psycopg.Connection
) -> None:
    # Given a run holding the dataset's lease, and a second run of the same dataset, queued
    world.fragment()
    holder = world.running_run()
    late = world.catalog.begin_run(run_id=UUID(int=10), dataset_id=world.dataset, trigger="scheduled").id
    # When the second is skipped (the lease is held elsewhere)
    _record(late, "skipped")(sql)
    # Then the holder still holds the lease
    assert sql.execute("SELECT lease_owner FROM datasets").fetchone() == (holder,)
