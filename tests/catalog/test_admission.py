"""admit_run and the admissions' life (migration 0009), on the catalog itself: every bound of its
arguments, the weight, the budget and its reserve, and when an admission stops holding its weight.
(make mutate-sql found these conditions tested only through the pipeline, which the catalog's
mutation run does not run.)"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from .conftest import World

MiB = 1024 * 1024


def admit(
    sql: psycopg.Connection,
    dataset: UUID,
    run: UUID | None = None,
    *,
    priority: str | None = "manual",
    budget: int | None = 4,
    reserve: int | None = 0,
    max_weight: int | None = 8,
    target: int | None = 100,
    stale: int | None = 900,
) -> dict[str, Any]:
    row = sql.execute(
        "SELECT admit_run(%s, %s, %s, %s, %s, %s, %s, %s)",
        (run or uuid4(), dataset, priority, budget, reserve, max_weight, target, stale),
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def held(sql: psycopg.Connection) -> int:
    row = sql.execute("SELECT (admission_status(900) ->> 'weight')::int").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "bad",
    [
        {"budget": None},
        {"budget": 0},
        {"reserve": None},
        {"reserve": -1},
        {"reserve": 4},  # = budget
        {"reserve": 5},
        {"max_weight": None},
        {"max_weight": 0},
        {"target": None},
        {"target": 0},
        {"stale": None},
        {"stale": 0},
        {"priority": None},
        {"priority": "urgent"},
    ],
)
def test_arguments_out_of_bounds_are_refused(world: World, sql: psycopg.Connection, bad: dict[str, Any]) -> None:
    world.fragment()
    with pytest.raises(psycopg.Error) as refused:
        admit(sql, world.dataset, **bad)
    assert refused.value.sqlstate == "FC422"
    assert held(sql) == 0


@pytest.mark.parametrize(
    "edge",
    [
        {"budget": 1},
        {"reserve": 3},  # budget - 1
        {"max_weight": 1},
        {"target": 1},
        {"stale": 1},
        {"priority": "scheduled", "reserve": 0},
        {"priority": "realtime"},
    ],
)
def test_arguments_at_their_bounds_are_accepted(world: World, sql: psycopg.Connection, edge: dict[str, Any]) -> None:
    world.fragment()
    assert admit(sql, world.dataset, **edge)["admitted"] is True


def test_the_weight_is_the_bins_its_compactable_bytes_make_capped(world: World, sql: psycopg.Connection) -> None:
    # Given 250 bytes of fragments in one table and 30 in another (target 100)
    world.fragment(table="battle", size=150)
    world.fragment(table="battle", size=100)
    world.fragment(table="ship", size=30)
    # And what does not count: another dataset's files
    other = World(world.catalog, owner=world.owner, dataset=uuid4())
    other.fragment(size=10_000)
    # Then the weight is all bytes // target + one partial bin per table (280 // 100 + 2 = 4), capped
    assert admit(sql, world.dataset, max_weight=8)["weight"] == 4
    assert admit(sql, world.dataset, max_weight=3, budget=16)["weight"] == 3


def test_files_that_will_not_be_compacted_do_not_weigh(world: World, sql: psycopg.Connection) -> None:
    # Given one fragment of 10 bytes, and a removed one and a quarantined one of 1,000 each
    world.fragment(size=10)
    removed = world.fragment(size=1000)
    quarantined = world.fragment(size=1000)
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now() WHERE id = %s", (removed.id,))
    sql.execute(
        "UPDATE dataset_files SET quarantined_at = now(), quarantine_step = 'Compact', quarantine_reason = 'bad'"
        " WHERE id = %s",
        (quarantined.id,),
    )
    # Then only the live fragment weighs: 10 // 100 + 1 table
    assert admit(sql, world.dataset)["weight"] == 1


@pytest.mark.parametrize(("size", "weight"), [(49, 1 + 1), (50, 0 + 1)])
def test_a_compacted_file_weighs_only_below_half_the_target(
    world: World, sql: psycopg.Connection, size: int, weight: int
) -> None:
    # Given a dataset holding one compacted file (as a commit leaves it) of 49 or 50 bytes, target 100,
    # and one fragment of 60: (60 + 49) // 100 + 1 table = 2, or 60 // 100 + 1 = 1
    world.fragment(size=60)
    sql.execute(
        "INSERT INTO dataset_files"
        " (dataset_id, table_name, kind, object_key, size_bytes, row_count, schema_fingerprint)"
        " VALUES (%s, 'battle', 'compacted', %s, %s, 1, 'fp1')",
        (world.dataset, f"datasets/{world.dataset}/battle/compacted/{uuid4()}/0.parquet", size),
    )
    assert admit(sql, world.dataset)["weight"] == weight


def test_an_empty_dataset_weighs_one(world: World, sql: psycopg.Connection) -> None:
    world.fragment(size=10)
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now()")
    assert admit(sql, world.dataset)["weight"] == 1


def _dataset_weighing(world: World, sql: psycopg.Connection, weight: int) -> UUID:
    w = World(world.catalog, owner=world.owner, dataset=uuid4())
    w.fragment(size=100 * (weight - 1) + 1)  # (100 (w-1) + 1) // 100 + 1 table = w
    return w.dataset


def test_a_run_fits_exactly_into_the_budget_and_one_more_weight_does_not(world: World, sql: psycopg.Connection) -> None:
    # Given a budget of 4 holding a run of weight 2
    world.fragment()
    assert admit(sql, _dataset_weighing(world, sql, 2), budget=4)["admitted"] is True
    # When runs of weight 3 and 2 ask, Then 3 does not fit (5 > 4) and 2 does (4 = 4)
    refused = admit(sql, _dataset_weighing(world, sql, 3), budget=4)
    assert (refused["admitted"], refused["weight"], refused["in_flight"]) == (False, 3, 2)
    assert admit(sql, _dataset_weighing(world, sql, 2), budget=4)["admitted"] is True
    assert held(sql) == 4


def test_a_run_heavier_than_the_whole_budget_runs_alone(world: World, sql: psycopg.Connection) -> None:
    heavy = _dataset_weighing(world, sql, 6)
    first = admit(sql, heavy, budget=4)
    assert (first["admitted"], first["weight"], first["in_flight"]) == (True, 6, 0)
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=4)["admitted"] is False


def test_scheduled_runs_leave_the_reserve_to_manual_and_realtime_ones(world: World, sql: psycopg.Connection) -> None:
    # Given a budget of 4 with 2 reserved, holding a scheduled run of weight 2
    policy: dict[str, Any] = {"budget": 4, "reserve": 2}
    assert admit(sql, _dataset_weighing(world, sql, 2), priority="scheduled", **policy)["admitted"] is True
    # Then another scheduled run of weight 1 waits (3 > 4 - 2), a manual or realtime one does not
    assert admit(sql, _dataset_weighing(world, sql, 1), priority="scheduled", **policy)["admitted"] is False
    assert admit(sql, _dataset_weighing(world, sql, 1), priority="manual", **policy)["admitted"] is True
    assert admit(sql, _dataset_weighing(world, sql, 1), priority="realtime", **policy)["admitted"] is True
    assert admit(sql, _dataset_weighing(world, sql, 1), priority="realtime", **policy)["admitted"] is False


def test_a_redelivered_run_finds_its_admission_even_when_the_budget_is_full(
    world: World, sql: psycopg.Connection
) -> None:
    run = uuid4()
    first = admit(sql, _dataset_weighing(world, sql, 2), run, budget=2)
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is False
    again = admit(sql, _dataset_weighing(world, sql, 1), run, budget=2)
    assert (first["admitted"], again["admitted"], again["weight"]) == (True, True, 2)
    assert held(sql) == 2


# -- when an admission stops holding its weight ---------------------------------------------------


def _age_admission(sql: psycopg.Connection, run: UUID, seconds: float) -> None:
    sql.execute(
        "UPDATE compaction_admissions SET admitted_at = now() - make_interval(secs => %s) WHERE run_id = %s",
        (seconds, run),
    )


@pytest.mark.parametrize(("age", "holds"), [(899, True), (901, False)])
def test_an_admission_without_a_run_holds_until_it_is_stale(
    world: World, sql: psycopg.Connection, age: int, holds: bool
) -> None:
    run = uuid4()
    admit(sql, _dataset_weighing(world, sql, 2), run, budget=2)
    _age_admission(sql, run, age)
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is not holds
    assert held(sql) == (2 if holds else 1)


@pytest.mark.parametrize(("age", "holds"), [(899, True), (901, False)])
def test_a_queued_run_holds_until_it_is_stale(world: World, sql: psycopg.Connection, age: int, holds: bool) -> None:
    world.fragment(size=101)  # weight 2
    run = world.catalog.begin_run(run_id=uuid4(), dataset_id=world.dataset, trigger="manual").id
    admit(sql, world.dataset, run, budget=2)
    sql.execute("UPDATE compaction_runs SET created_at = now() - make_interval(secs => %s)", (age,))
    _age_admission(sql, run, 10_000)  # the run's own age decides, not the admission's
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is not holds


def test_a_running_run_holds_while_it_holds_its_lease_and_not_after(world: World, sql: psycopg.Connection) -> None:
    world.fragment(size=101)  # weight 2
    run = world.running_run()
    admit(sql, world.dataset, run, budget=2)
    _age_admission(sql, run, 10_000)
    sql.execute("UPDATE compaction_runs SET created_at = now() - interval '1 day'")
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is False
    # When its lease ends (at this very moment), Then its weight is free
    with sql.transaction():
        sql.execute("UPDATE datasets SET lease_expires_at = now() WHERE id = %s", (world.dataset,))
        assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is True


def test_a_running_run_whose_dataset_lease_is_another_runs_holds_nothing(world: World, sql: psycopg.Connection) -> None:
    world.fragment(size=101)
    run = world.running_run()
    admit(sql, world.dataset, run, budget=2)
    sql.execute("UPDATE datasets SET lease_owner = %s WHERE id = %s", (uuid4(), world.dataset))
    assert admit(sql, _dataset_weighing(world, sql, 1), budget=2)["admitted"] is True


@pytest.mark.parametrize("outcome", ["failed", "skipped"])
def test_a_finished_run_holds_nothing(world: World, sql: psycopg.Connection, outcome: str) -> None:
    world.fragment(size=101)
    run = world.running_run()
    admit(sql, world.dataset, run, budget=2)
    world.catalog.record_run_status(run, outcome)  # type: ignore[arg-type]
    assert held(sql) == 0
    assert admit(sql, _dataset_weighing(world, sql, 2), budget=2)["admitted"] is True


def test_a_released_admission_frees_its_weight_once(world: World, sql: psycopg.Connection) -> None:
    run = uuid4()
    admit(sql, _dataset_weighing(world, sql, 2), run, budget=2)
    release = "SELECT release_admission(%s)"
    assert sql.execute(release, (run,)).fetchone() == (True,)
    assert sql.execute(release, (run,)).fetchone() == (False,)
    assert held(sql) == 0


@pytest.mark.parametrize("queued_run", [False, True])
def test_an_admission_is_stale_at_the_very_moment_its_stale_seconds_are_over(
    world: World, sql: psycopg.Connection, queued_run: bool
) -> None:
    # Given an admission (with no run row, or with a queued run) exactly 900 s old at the
    # transaction's now
    world.fragment(size=101)  # weight 2
    run = uuid4()
    if queued_run:
        world.catalog.begin_run(run_id=run, dataset_id=world.dataset, trigger="manual")
    admit(sql, world.dataset, run, budget=2)
    with sql.transaction():
        sql.execute("UPDATE compaction_admissions SET admitted_at = now() - interval '900 seconds'")
        sql.execute("UPDATE compaction_runs SET created_at = now() - interval '900 seconds'")
        # Then it holds nothing any more
        assert admit(sql, _dataset_weighing(world, sql, 2), budget=2)["admitted"] is True
