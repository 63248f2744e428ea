"""commit_compaction: all or nothing, idempotent, safe against every race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.errors import CatalogNotFound, InputsNotLive, InvalidCatalogArgument, LeaseNotHeld
from fusou_compaction.catalog.models import CompactedOutput

from .conftest import World


def _snapshot(sql: psycopg.Connection) -> list[tuple[object, ...]]:
    return sql.execute("SELECT object_key, kind, removed_at IS NULL FROM dataset_files ORDER BY object_key").fetchall()


def test_commit_swaps_inputs_for_outputs_and_records_the_run(world: World) -> None:
    # Given three live fragments and a run holding the lease
    frags = [world.fragment(rows=r, size=100 * r) for r in (1, 2, 3)]
    run = world.running_run()
    # When the run commits one output with all their rows
    result = world.catalog.commit_compaction(
        run_id=run,
        dataset_id=world.dataset,
        removed=[f.id for f in frags],
        outputs=[world.output_for(run, frags)],
        metrics={"step_timings": {"Compact": 1.5}},
    )
    # Then the output is the only live file, the run succeeded with its numbers, the lease is free
    live = world.catalog.list_live_files(world.dataset)
    assert [f.kind for f in live] == ["compacted"] and live[0].row_count == 6
    assert result.committed and not result.already_committed and not result.compaction_needed
    assert (result.run.status, result.run.files_in, result.run.files_out, result.run.rows_in, result.run.rows_out) == (
        "succeeded",
        3,
        1,
        6,
        6,
    )
    assert result.run.step_timings == {"Compact": 1.5}
    ds = world.catalog.get_dataset(world.dataset)
    assert ds.lease_owner is None and ds.compactions == 1 and ds.live_rows == 6


def test_a_second_commit_of_the_same_run_changes_nothing(world: World, sql: psycopg.Connection) -> None:
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    args = {
        "run_id": run,
        "dataset_id": world.dataset,
        "removed": [f.id for f in frags],
        "outputs": [world.output_for(run, frags)],
    }
    world.catalog.commit_compaction(**args)  # type: ignore[arg-type]
    before = _snapshot(sql)
    again = world.catalog.commit_compaction(**args)  # type: ignore[arg-type]
    assert again.already_committed and _snapshot(sql) == before


def test_commit_after_the_lease_expired_changes_nothing(world: World, sql: psycopg.Connection) -> None:
    frags = [world.fragment()]
    run = world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    before = _snapshot(sql)
    with pytest.raises(LeaseNotHeld):
        world.catalog.commit_compaction(
            run_id=run, dataset_id=world.dataset, removed=[frags[0].id], outputs=[world.output_for(run, frags)]
        )
    assert _snapshot(sql) == before


def test_commit_with_an_input_already_removed_names_it_and_changes_nothing(
    world: World, sql: psycopg.Connection
) -> None:
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now() WHERE id = %s", (frags[1].id,))
    before = _snapshot(sql)
    with pytest.raises(InputsNotLive) as exc:
        world.catalog.commit_compaction(
            run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
        )
    assert str(frags[1].id) in exc.value.message
    assert _snapshot(sql) == before


def test_rows_out_must_equal_rows_in(world: World, sql: psycopg.Connection) -> None:
    frags = [world.fragment(rows=5), world.fragment(rows=5)]
    run = world.running_run()
    short = world.output_for(run, frags).model_copy(update={"row_count": 9})
    before = _snapshot(sql)
    with pytest.raises(InvalidCatalogArgument, match="rows in <> rows out"):
        world.catalog.commit_compaction(
            run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[short]
        )
    assert _snapshot(sql) == before


def test_outputs_must_live_under_the_runs_own_prefix(world: World) -> None:
    frags = [world.fragment()]
    run = world.running_run()
    foreign = world.output_for(run, frags).model_copy(
        update={"object_key": keys.compacted_key(world.dataset, "battle", uuid4(), 0)}
    )
    with pytest.raises(InvalidCatalogArgument, match="prefix"):
        world.catalog.commit_compaction(run_id=run, dataset_id=world.dataset, removed=[frags[0].id], outputs=[foreign])


def test_a_run_that_is_not_running_cannot_commit(world: World) -> None:
    frags = [world.fragment()]
    run = uuid4()
    world.catalog.begin_run(run_id=run, dataset_id=world.dataset, trigger="manual")
    world.catalog.acquire_lease(dataset_id=world.dataset, run_id=run, lease_seconds=60)
    with pytest.raises(LeaseNotHeld, match="queued"):
        world.catalog.commit_compaction(
            run_id=run, dataset_id=world.dataset, removed=[frags[0].id], outputs=[world.output_for(run, frags)]
        )


def test_commit_of_an_unknown_run_is_not_found(world: World) -> None:
    world.fragment()
    with pytest.raises(CatalogNotFound):
        world.catalog.commit_compaction(run_id=uuid4(), dataset_id=world.dataset, removed=[], outputs=[])


def test_a_fragment_uploaded_during_the_run_stays_live_and_keeps_work_pending(world: World) -> None:
    # Given a run that planned two fragments
    planned = [world.fragment(), world.fragment()]
    run = world.running_run()
    # When a new fragment arrives before the commit
    late = world.fragment()
    result = world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in planned], outputs=[world.output_for(run, planned)]
    )
    # Then it is still live, sorts after the compacted rows, and the dataset still needs work
    live = world.catalog.list_live_files(world.dataset)
    assert [(f.kind, f.id == late.id) for f in live] == [("compacted", False), ("fragment", True)]
    assert result.compaction_needed and world.catalog.get_dataset(world.dataset).compaction_needed


def test_concurrent_commits_of_one_run_commit_once(world: World, sql: psycopg.Connection) -> None:
    frags = [world.fragment() for _ in range(3)]
    run = world.running_run()
    barrier = threading.Barrier(5)

    def commit(_: int) -> bool:
        barrier.wait()
        return world.catalog.commit_compaction(
            run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
        ).already_committed

    with ThreadPoolExecutor(5) as pool:
        outcomes = sorted(pool.map(commit, range(5)))
    assert outcomes == [False] + [True] * 4
    assert sql.execute("SELECT count(*) FROM dataset_files WHERE kind = 'compacted'").fetchone() == (1,)


def test_a_stale_run_loses_to_the_run_that_took_over_its_lease(world: World, sql: psycopg.Connection) -> None:
    # Given run A whose lease expired and run B that took over the same inputs
    frags = [world.fragment(), world.fragment()]
    a = world.running_run()
    sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    b = world.running_run()
    barrier = threading.Barrier(2)

    def commit(run: object) -> str:
        barrier.wait()
        try:
            world.catalog.commit_compaction(
                run_id=run,
                dataset_id=world.dataset,
                removed=[f.id for f in frags],  # type: ignore[arg-type]
                outputs=[world.output_for(run, frags)],
            )  # type: ignore[arg-type]
            return "committed"
        except LeaseNotHeld:
            return "lease lost"

    # When both commit at once
    with ThreadPoolExecutor(2) as pool:
        outcomes = dict(zip(["a", "b"], pool.map(commit, [a, b]), strict=True))
    # Then only B's output exists
    assert outcomes == {"a": "lease lost", "b": "committed"}
    keys_live = [r[0] for r in sql.execute("SELECT object_key FROM dataset_files WHERE removed_at IS NULL")]
    assert len(keys_live) == 1 and str(b) in keys_live[0]


def test_a_registration_waits_for_an_open_commit_and_stays_pending(world: World, database_url: str) -> None:
    # Given a commit holding its transaction open on a raw connection
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    out = world.output_for(run, frags)
    committer = psycopg.connect(database_url)
    committer.execute(
        "SELECT commit_compaction(%s, %s, %s::uuid[], %s::jsonb)",
        (run, world.dataset, [str(f.id) for f in frags], f"[{out.model_dump_json()}]"),
    )
    # When a fragment is registered meanwhile (it blocks on the dataset row)
    done = threading.Event()
    late: list[object] = []

    def register() -> None:
        late.append(world.fragment())
        done.set()

    t = threading.Thread(target=register)
    t.start()
    assert not done.wait(0.5), "registration should wait for the commit's row lock"
    committer.commit()
    committer.close()
    t.join(10)
    # Then it landed after the commit: live, and the dataset still needs compaction
    live = world.catalog.list_live_files(world.dataset)
    assert [f.kind for f in live] == ["compacted", "fragment"]
    assert world.catalog.get_dataset(world.dataset).compaction_needed


def test_outputs_take_the_upload_position_of_their_earliest_input(world: World) -> None:
    first = [world.fragment(), world.fragment()]
    later = world.fragment()
    run = world.running_run()
    outs = [world.output_for(run, first, part=0), world.output_for(run, [later], part=1)]
    world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in [*first, later]], outputs=outs
    )
    live = world.catalog.list_live_files(world.dataset)
    assert [f.seq for f in live] == [first[0].seq, later.seq]
    assert [f.object_key for f in live] == [o.object_key for o in outs]


def test_compacted_outputs_of_several_tables_commit_together(world: World) -> None:
    battle = [world.fragment(table="battle", rows=3)]
    ships = [world.fragment(table="ship_state", rows=4)]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run,
        dataset_id=world.dataset,
        removed=[battle[0].id, ships[0].id],
        outputs=[world.output_for(run, battle, table="battle"), world.output_for(run, ships, table="ship_state")],
    )
    live = world.catalog.list_live_files(world.dataset)
    assert {(f.table_name, f.kind, f.row_count) for f in live} == {
        ("battle", "compacted", 3),
        ("ship_state", "compacted", 4),
    }


def test_an_empty_output_list_for_zero_row_inputs_is_allowed(world: World) -> None:
    empty = [world.fragment(rows=0)]
    run = world.running_run()
    result = world.catalog.commit_compaction(run_id=run, dataset_id=world.dataset, removed=[empty[0].id], outputs=[])
    assert result.committed and world.catalog.list_live_files(world.dataset) == []


def test_output_rows_count_in_their_own_table(world: World) -> None:
    # Rows moved to another table are not "the same rows": refused.
    frags = [world.fragment(table="battle", rows=3)]
    run = world.running_run()
    wrong = CompactedOutput(
        table_name="ship_state",
        object_key=keys.compacted_key(world.dataset, "ship_state", run, 0),
        size_bytes=1,
        row_count=3,
        schema_fingerprint="fp",
    )
    with pytest.raises(InvalidCatalogArgument):
        world.catalog.commit_compaction(run_id=run, dataset_id=world.dataset, removed=[frags[0].id], outputs=[wrong])
