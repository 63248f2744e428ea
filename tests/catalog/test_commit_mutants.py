"""commit_compaction's conditions that mutation testing (make mutate-sql) found untested."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
import pytest

from fusou_compaction.catalog.models import CatalogFile

from .conftest import World
from .interleave import one_after_another, slow_down

COMMIT = "SELECT commit_compaction(%s, %s, %s::uuid[], %s::jsonb)"


def commit_args(world: World, run: UUID, inputs: list[CatalogFile]) -> tuple[Any, ...]:
    return (run, world.dataset, [str(f.id) for f in inputs], f"[{world.output_for(run, inputs).model_dump_json()}]")


@pytest.mark.parametrize(("expires_in", "committed"), [("0 seconds", False), ("1 microsecond", True)])
def test_a_lease_ending_at_this_very_moment_no_longer_commits(
    world: World, sql: psycopg.Connection, expires_in: str, committed: bool
) -> None:
    # Given a run whose lease ends exactly now (the transaction's now), or just after
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    outcome: Any
    try:
        with sql.transaction():
            sql.execute(f"UPDATE datasets SET lease_expires_at = now() + interval '{expires_in}'")
            outcome = sql.execute(COMMIT, commit_args(world, run, frags)).fetchone()
    except psycopg.Error as exc:
        outcome = exc.sqlstate
    # Then a lease that ends now is not held (FC409), as acquire_lease lets another run take it
    if committed:
        assert outcome is not None and outcome[0]["committed"] is True
    else:
        assert outcome == "FC409"


FAILURE_PATHS = {
    # the workflow's own status report, and the failure path's record (RecordFailure, the DLQ)
    "record_run_status": lambda conn, run: conn.execute("SELECT record_run_status(%s, 'failed')", (run,)),
    "record_failure": lambda conn, run: conn.execute(
        "SELECT record_failure('workflow', 'boom', p_run_id => %s, p_error_step => 'Compact')", (run,)
    ),
}


def _fail(path: str, run: UUID) -> Callable[[psycopg.Connection], Any]:
    """The failure path ``path`` recording ``run``'s failure, on a connection of its own."""

    def fail(conn: psycopg.Connection) -> Any:
        FAILURE_PATHS[path](conn, run)
        return True

    return fail


def _commit(world: World, run: UUID, inputs: list[CatalogFile]) -> Callable[[psycopg.Connection], Any]:
    """``run``'s commit of ``inputs``, on a connection of its own: whether it committed."""

    def commit(conn: psycopg.Connection) -> Any:
        row = conn.execute(COMMIT, commit_args(world, run, inputs)).fetchone()
        return row[0]["committed"] if row else None

    return commit


@pytest.mark.parametrize("path", sorted(FAILURE_PATHS))
def test_a_failure_recorded_while_the_run_commits_leaves_nothing_committed(
    world: World, database_url: str, sql: psycopg.Connection, path: str
) -> None:
    # Given a running run, and updates of runs slowed down: its failure is being recorded
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    slow_down(sql, "compaction_runs", "UPDATE")
    # When its commit arrives meanwhile
    failed, committed = one_after_another(database_url, _fail(path, run), _commit(world, run, frags))
    # Then the failure stands and the commit is refused (the run is not running). Both take the
    # dataset's row before the run's (migration 0011): before, the failure held the run's row and
    # waited for the dataset's, which the commit held while it waited for the run's: a deadlock
    # (40P01) that PostgreSQL broke after a second by aborting one of them.
    assert failed is True and committed == "FC409"
    assert sql.execute("SELECT status FROM compaction_runs").fetchone() == ("failed",)
    assert sql.execute("SELECT count(*) FROM dataset_files WHERE kind = 'compacted'").fetchone() == (0,)
    assert sql.execute("SELECT lease_owner, consecutive_failures FROM datasets").fetchone() == (None, 1)


@pytest.mark.parametrize("path", sorted(FAILURE_PATHS))
def test_a_failure_recorded_while_the_run_commits_after_it_changes_nothing(
    world: World, database_url: str, sql: psycopg.Connection, path: str
) -> None:
    # Given a running run whose commit is under way (updates of runs slowed down)
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    slow_down(sql, "compaction_runs", "UPDATE")
    # When a failure for it is recorded meanwhile (a late report)
    committed, failed = one_after_another(database_url, _commit(world, run, frags), _fail(path, run))
    # Then it waits for the commit, and the run stays succeeded with its outputs
    assert committed is True and failed is True
    assert sql.execute("SELECT status FROM compaction_runs").fetchone() == ("succeeded",)
    assert sql.execute("SELECT count(*) FROM dataset_files WHERE kind = 'compacted'").fetchone() == (1,)
    assert sql.execute("SELECT consecutive_failures FROM datasets").fetchone() == (0,)


@pytest.mark.parametrize("missing", ["table_name", "object_key", "row_count", "size_bytes"])
def test_an_output_missing_a_field_is_refused_as_incomplete(
    world: World, sql: psycopg.Connection, missing: str
) -> None:
    # Given an output missing its table (its key in the shape an empty table gives), key, rows or size
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    output = json.loads(world.output_for(run, frags).model_dump_json())
    output[missing] = None
    if missing == "table_name":
        output["object_key"] = f"datasets/{world.dataset}//compacted/{run}/00000.parquet"
    # When the run commits it, Then it is refused for what it is: incomplete, not a row mismatch
    with pytest.raises(psycopg.Error) as refused:
        sql.execute(COMMIT, (run, world.dataset, [str(f.id) for f in frags], json.dumps([output])))
    assert refused.value.sqlstate == "FC422"
    assert "is incomplete or not under the run's prefix" in str(refused.value)


def test_an_output_without_input_ids_takes_the_position_of_the_earliest_removed_input(
    world: World, sql: psycopg.Connection
) -> None:
    # Given an older fragment that stays live, then two fragments the run replaces
    older = world.fragment()
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    # When the run's output does not say which inputs it came from
    output = json.loads(world.output_for(run, frags).model_dump_json())
    output["input_ids"] = None
    sql.execute(COMMIT, (run, world.dataset, [str(f.id) for f in frags], json.dumps([output])))
    # Then it takes the upload position of the earliest file it replaced, after the older one
    seq = "SELECT seq FROM dataset_files WHERE id = %s"
    row = sql.execute("SELECT seq FROM dataset_files WHERE kind = 'compacted'").fetchone()
    assert row == sql.execute(seq, (frags[0].id,)).fetchone()
    compacted = sql.execute("SELECT id FROM dataset_files WHERE kind = 'compacted'").fetchone()
    assert compacted is not None
    assert [f.id for f in world.catalog.list_live_files(world.dataset)] == [older.id, compacted[0]]


def test_without_input_ids_the_position_comes_from_the_outputs_own_table(world: World, sql: psycopg.Connection) -> None:
    # Given fragments of two tables, the other table's uploaded first
    ships = [world.fragment(table="ship"), world.fragment(table="ship")]
    battles = [world.fragment(table="battle"), world.fragment(table="battle")]
    run = world.running_run()
    # When both tables' outputs commit without naming their inputs
    outputs = [
        {**json.loads(world.output_for(run, fs, table=t).model_dump_json()), "input_ids": None}
        for t, fs in (("ship", ships), ("battle", battles))
    ]
    sql.execute(COMMIT, (run, world.dataset, [str(f.id) for f in ships + battles], json.dumps(outputs)))
    # Then each takes the position of its own table's earliest input
    got: dict[str, int] = dict(
        sql.execute("SELECT table_name, seq FROM dataset_files WHERE kind = 'compacted'").fetchall()
    )
    first: dict[str, int] = dict(
        sql.execute("SELECT table_name, min(seq) FROM dataset_files WHERE kind = 'fragment' GROUP BY 1")
    )
    assert got == first


def test_without_metrics_a_run_counts_the_bytes_of_the_files_it_replaced(world: World, sql: psycopg.Connection) -> None:
    # Given a live fragment the run keeps, and two it replaces
    world.fragment(size=5000)
    frags = [world.fragment(size=300), world.fragment(size=400)]
    run = world.running_run()
    # When it commits without metrics of its own
    sql.execute(COMMIT, commit_args(world, run, frags))
    # Then its bytes and rows in are those of the replaced files only
    row = sql.execute("SELECT bytes_in, rows_in, files_in FROM compaction_runs WHERE id = %s", (run,)).fetchone()
    assert row == (700, sum(f.row_count for f in frags), 2)
