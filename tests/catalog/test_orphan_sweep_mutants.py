"""The orphan sweeps' SQL functions (migration 0010): conditions that make mutate-sql found untested.

Called as SQL (the ``sql`` superuser connection) where the client's own argument checks would hide
the function's, and inside one transaction where a boundary is the transaction's ``now()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog

from .conftest import World
from .interleave import one_after_another, slow_down

BEGIN_TOUCHED = "SELECT begin_orphan_sweep(%s, %s, %s)"
BEGIN_INVENTORY = "SELECT begin_inventory_sweep(%s, %s, %s, %s, %s)"


def _sqlstate(sql: psycopg.Connection, query: str, args: tuple[Any, ...]) -> str | None:
    try:
        with sql.transaction():
            sql.execute(query, args)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


# -- leases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "lease", "refused"),
    [(None, 60, True), ("", 60, True), ("a", None, True), ("a", 0, True), ("a", 1, False)],
)
def test_a_sweep_needs_an_owner_and_a_lease_of_at_least_a_second(
    sql: psycopg.Connection, owner: str | None, lease: int | None, refused: bool
) -> None:
    # When a sweep is begun with each argument wrong on its own (or a lease of exactly 1 s)
    state = _sqlstate(sql, BEGIN_TOUCHED, (owner, lease, 0))
    # Then the function itself refuses the wrong one (FC422) and grants the 1 s lease
    assert state == ("FC422" if refused else None)


def test_a_lease_ending_at_this_very_moment_can_be_taken_and_is_no_longer_held(sql: psycopg.Connection) -> None:
    # Given the touched sweep's lease held by b until exactly now (the transaction's now)
    with sql.transaction():
        sql.execute("UPDATE orphan_sweeps SET lease_owner = 'b', lease_expires_at = now() WHERE sweep = 'touched'")
        # Then b no longer holds it
        with pytest.raises(psycopg.Error) as held, sql.transaction():
            sql.execute("SELECT next_orphan_sweep_datasets('b', 10)")
        assert held.value.sqlstate == "FC409"
        # And a may take it
        taken = sql.execute(BEGIN_TOUCHED, ("a", 60, 0)).fetchone()
    assert taken is not None and taken[0]["acquired"] is True


def test_a_lease_ending_just_after_now_is_still_held(sql: psycopg.Connection) -> None:
    with sql.transaction():
        sql.execute(
            "UPDATE orphan_sweeps SET lease_owner = 'b', lease_expires_at = now() + interval '1 microsecond'"
            " WHERE sweep = 'touched'"
        )
        taken = sql.execute(BEGIN_TOUCHED, ("a", 60, 0)).fetchone()
        held = sql.execute("SELECT next_orphan_sweep_datasets('b', 10)").fetchone()
    assert taken is not None and taken[0]["acquired"] is False and held is not None


def test_two_invocations_taking_the_sweep_at_once_get_it_once(database_url: str, sql: psycopg.Connection) -> None:
    # Given writes of the sweeps' rows slowed down: a taker sits between reading the row and writing it
    slow_down(sql, "orphan_sweeps", "UPDATE")

    def take(owner: str) -> Callable[[psycopg.Connection], Any]:
        def call(conn: psycopg.Connection) -> Any:
            row = conn.execute(BEGIN_TOUCHED, (owner, 60, 0)).fetchone()
            return row[0]["acquired"] if row else None

        return call

    # When a second invocation takes it meanwhile
    first, second = one_after_another(database_url, take("a"), take("b"))
    # Then it waits for the first (the row is locked when read) and finds the lease held
    assert (first, second) == (True, False)
    assert sql.execute("SELECT lease_owner FROM orphan_sweeps WHERE sweep = 'touched'").fetchone() == ("a",)


def test_progress_recorded_while_the_lease_runs_out_is_seen_by_the_next_holder(
    catalog: Catalog, database_url: str, sql: psycopg.Connection
) -> None:
    # Given a window of two datasets held by a, whose lease runs out in 0.3 s
    for _ in range(2):
        World(catalog, uuid4(), uuid4()).fragment()
    window = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=0)
    assert window.pending == 2
    done = sql.execute("SELECT dataset_id FROM orphan_sweep_datasets ORDER BY 1 LIMIT 1").fetchone()
    assert done is not None
    # and a's progress slowed down between holding the lease and taking its dataset off
    slow_down(sql, "orphan_sweep_datasets", "DELETE", seconds=0.6)
    sql.execute("UPDATE orphan_sweeps SET lease_expires_at = now() + interval '0.3 seconds' WHERE sweep = 'touched'")

    def progress(conn: psycopg.Connection) -> Any:
        row = conn.execute("SELECT record_orphan_sweep_progress('a', ARRAY[%s]::uuid[])", (done[0],)).fetchone()
        return row[0]["pending"] if row else None

    def take_over(conn: psycopg.Connection) -> Any:
        row = conn.execute(BEGIN_TOUCHED, ("b", 60, 0)).fetchone()
        return row[0] if row else None

    # When b takes the sweep over after a's lease ran out, while a's progress is being recorded
    pending, taken = one_after_another(database_url, progress, take_over, lag=0.45)
    # Then b waited for a's progress (a held the row from when it checked its lease) and resumes
    # the window with one dataset left, not two
    assert pending == 1
    assert taken["acquired"] is True and taken["resumed"] is True and taken["pending"] == 1


# -- the touched sweep's window ------------------------------------------------------------------


def _touched(world: World, source: str) -> None:
    """Give one dataset one change of one kind (its upload pushed out of every window but for "file")."""
    world.fragment()
    if source == "run":
        world.running_run()
    elif source == "failure":
        world.catalog.record_failure(source="workflow", error="rejected", dataset_id=world.dataset)


@pytest.mark.parametrize("source", ["run", "file", "failure"])
def test_a_window_holds_the_changes_from_its_start_and_before_its_end(
    catalog: Catalog, sql: psycopg.Connection, source: str
) -> None:
    # Given datasets changed (one kind of change each) exactly at the window's start, a
    # microsecond before it, and exactly at its end (the window opens at the transaction's now,
    # from the watermark an hour ago, with no lookback)
    worlds = {name: World(catalog, uuid4(), uuid4()) for name in ("at_start", "before", "at_end")}
    for w in worlds.values():
        _touched(w, source)
        if source != "file":
            sql.execute(
                "UPDATE dataset_files SET added_at = now() - interval '10 days' WHERE dataset_id = %s", (w.dataset,)
            )
    # (the times are set in the sweep's own transaction, whose now() the window ends at)
    with sql.transaction():
        sql.execute("UPDATE orphan_sweeps SET watermark = now() - interval '1 hour' WHERE sweep = 'touched'")
        at = {
            "at_start": "now() - interval '1 hour'",
            "before": "now() - interval '1 hour 1 microsecond'",
            "at_end": "now()",
        }
        table, column = {
            "run": ("compaction_runs", "updated_at"),
            "file": ("dataset_files", "added_at"),
            "failure": ("compaction_failures", "at"),
        }[source]
        for name, w in worlds.items():
            sql.execute(f"UPDATE {table} SET {column} = {at[name]} WHERE dataset_id = %s", (w.dataset,))
        # When the sweep opens its window
        sql.execute(BEGIN_TOUCHED, ("a", 60, 0))
        pending = {r[0] for r in sql.execute("SELECT dataset_id FROM orphan_sweep_datasets")}
    # Then it holds the change at its start only ([start, end))
    assert pending == {worlds["at_start"].dataset}


def test_a_failure_without_a_dataset_touches_none(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a failure recorded without a dataset (a message that named none), and one with a dataset
    # but outside the window
    catalog.record_failure(source="dlq", error="not JSON", message_id="m-1")
    old = World(catalog, uuid4(), uuid4())
    catalog.record_failure(source="workflow", error="rejected", dataset_id=old.dataset)
    sql.execute("UPDATE compaction_failures SET at = now() - interval '1 day' WHERE dataset_id IS NOT NULL")
    sql.execute("UPDATE orphan_sweeps SET watermark = now() - interval '1 hour' WHERE sweep = 'touched'")
    # When a window opens, Then neither is in it
    window = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=0)
    assert window.pending == 0


@pytest.mark.parametrize(("lookback", "refused"), [(-1, True), (None, True), (0, False)])
def test_the_lookback_may_be_zero(sql: psycopg.Connection, lookback: int | None, refused: bool) -> None:
    assert _sqlstate(sql, BEGIN_TOUCHED, ("a", 60, lookback)) == ("FC422" if refused else None)


@pytest.mark.parametrize(("limit", "returned"), [(5, 5), (1000, 1000), (5000, 1000)])
def test_a_page_of_touched_datasets_holds_at_most_a_thousand(
    sql: psycopg.Connection, limit: int, returned: int
) -> None:
    # Given a window with 1,001 datasets to sweep
    sql.execute(BEGIN_TOUCHED, ("a", 60, 0))
    sql.execute("INSERT INTO orphan_sweep_datasets (dataset_id) SELECT gen_random_uuid() FROM generate_series(1, 1001)")
    # When a page is asked for
    row = sql.execute("SELECT jsonb_array_length(next_orphan_sweep_datasets('a', %s))", (limit,)).fetchone()
    # Then it holds what was asked for, at most 1,000
    assert row == (returned,)


def test_progress_is_stamped_on_the_touched_sweep_only(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a window of two datasets, both sweeps' rows stamped an hour ago
    a, b = World(catalog, uuid4(), uuid4()), World(catalog, uuid4(), uuid4())
    a.fragment()
    b.fragment()
    catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=0)
    sql.execute("UPDATE orphan_sweeps SET updated_at = now() - interval '1 hour'")
    # When one dataset is swept (the window not finished)
    with sql.transaction():
        sql.execute("SELECT record_orphan_sweep_progress('a', ARRAY[%s]::uuid[])", (a.dataset,))
        stamped = dict(sql.execute("SELECT sweep, updated_at = now() FROM orphan_sweeps").fetchall())
    # Then the touched sweep says when it last progressed, and the inventory sweep is left alone
    assert stamped == {"touched": True, "inventory": False}


# -- the inventory sweep ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "report", "created", "refused"),
    [
        (None, None, None, True),
        (-1, None, None, True),
        (0, None, None, False),
        (0, "r.json", None, True),
        (0, None, "2026-01-01T00:00:00Z", True),
    ],
)
def test_an_inventory_sweep_needs_a_period_and_a_report_with_its_time(
    sql: psycopg.Connection, every: int | None, report: str | None, created: str | None, refused: bool
) -> None:
    assert _sqlstate(sql, BEGIN_INVENTORY, ("a", 60, every, report, created)) == ("FC422" if refused else None)


def test_an_inventory_sweep_held_by_another_is_not_taken_nor_changed(sql: psycopg.Connection) -> None:
    # Given the inventory sweep held by b, with no report in progress
    sql.execute(
        "UPDATE orphan_sweeps SET lease_owner = 'b', lease_expires_at = now() + interval '1 minute'"
        " WHERE sweep = 'inventory'"
    )
    # When a begins it with a report that is due
    row = sql.execute(BEGIN_INVENTORY, ("a", 60, 0, "r.json", "2026-01-01T00:00:00Z")).fetchone()
    # Then a is refused and b's sweep has no report set behind its back
    assert row is not None and row[0]["acquired"] is False and row[0]["report"] is None
    assert sql.execute("SELECT lease_owner, report FROM orphan_sweeps WHERE sweep = 'inventory'").fetchone() == (
        "b",
        None,
    )


@pytest.mark.parametrize(
    ("file", "rows", "refused"),
    [(0, 0, False), (None, 5, True), (-1, 5, True), (3, None, True), (3, -1, True)],
)
def test_inventory_progress_is_a_file_and_a_row_from_zero(
    sql: psycopg.Connection, file: int | None, rows: int | None, refused: bool
) -> None:
    # Given a report in progress held by a
    sql.execute(BEGIN_INVENTORY, ("a", 60, 0, "r.json", "2026-01-01T00:00:00Z"))
    # When progress is recorded with each value wrong on its own (or both at zero)
    state = _sqlstate(sql, "SELECT record_inventory_progress('a', 'r.json', %s, %s)", (file, rows))
    # Then the function itself refuses it (FC422, not a constraint's error after the fact)
    assert state == ("FC422" if refused else None)
    if not refused:
        position = sql.execute("SELECT report_file, report_rows FROM orphan_sweeps WHERE sweep = 'inventory'")
        assert position.fetchone() == (0, 0)
