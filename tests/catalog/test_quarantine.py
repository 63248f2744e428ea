"""Quarantine (migration 0008): a file set aside by the run holding the lease leaves every plan,
keeps its object and its rows' account, and comes back or goes only by an operator's hand."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, InputsNotLive, InvalidCatalogArgument, LeaseNotHeld
from fusou_compaction.catalog.models import RegisteredFragment
from fusou_compaction.catalog.transport import SupabaseRpc
from fusou_compaction.local.postgrest import LocalPostgrest

from .conftest import World

REASON = "CorruptInputError: row group 0 says it holds 1000000 rows but column 'a' holds 100 values"


def _quarantine(world: World, run: Any, file_id: Any, reason: str = REASON) -> Any:
    return world.catalog.quarantine_file(
        run_id=run, dataset_id=world.dataset, file_id=file_id, step="Compact", reason=reason
    )


def _files(sql: psycopg.Connection) -> list[tuple[object, ...]]:
    return sql.execute(
        "SELECT object_key, removed_at IS NULL, quarantined_at IS NULL, quarantine_reason FROM dataset_files"
        " ORDER BY object_key"
    ).fetchall()


def _counters_are_exact(sql: psycopg.Connection, dataset: Any) -> None:
    row = sql.execute(
        "SELECT d.live_fragments, d.live_compacted, d.live_rows, d.live_bytes, d.compaction_needed,"
        " (SELECT count(*) FILTER (WHERE kind = 'fragment') FROM dataset_files f"
        "   WHERE f.dataset_id = d.id AND removed_at IS NULL AND quarantined_at IS NULL),"
        " (SELECT count(*) FILTER (WHERE kind = 'compacted') FROM dataset_files f"
        "   WHERE f.dataset_id = d.id AND removed_at IS NULL AND quarantined_at IS NULL),"
        " (SELECT coalesce(sum(row_count), 0) FROM dataset_files f"
        "   WHERE f.dataset_id = d.id AND removed_at IS NULL AND quarantined_at IS NULL),"
        " (SELECT coalesce(sum(size_bytes), 0) FROM dataset_files f"
        "   WHERE f.dataset_id = d.id AND removed_at IS NULL AND quarantined_at IS NULL)"
        " FROM datasets d WHERE d.id = %s",
        (dataset,),
    ).fetchone()
    assert row is not None
    fragments, compacted, rows, size, needed, *recomputed = row
    assert [fragments, compacted, rows, size] == recomputed
    assert needed == (fragments > 0)


def test_a_quarantined_file_leaves_the_plan_and_the_counters_and_is_listed_with_its_reason(world: World) -> None:
    # Given two live fragments and a run holding the lease
    good, bad = world.fragment(rows=5), world.fragment(rows=7)
    run = world.running_run()
    # When the run quarantines one of them
    result = _quarantine(world, run, bad.id)
    # Then it is no longer live, the counters leave it out, and the status lists it with its reason
    assert result.quarantined
    assert [f.id for f in world.catalog.list_live_files(world.dataset)] == [good.id]
    ds = world.catalog.get_dataset(world.dataset)
    assert (ds.live_fragments, ds.live_rows, ds.compaction_needed) == (1, 5, True)
    [listed] = world.catalog.dataset_status(world.dataset).quarantined
    assert (listed.id, listed.table_name, listed.object_key, listed.row_count) == (bad.id, "battle", bad.object_key, 7)
    assert (listed.quarantine_reason, listed.quarantine_step, listed.quarantined_by_run) == (REASON, "Compact", run)
    assert listed.quarantined_at is not None
    assert world.catalog.list_quarantined(world.dataset) == [listed]


def test_quarantining_the_only_fragment_leaves_nothing_to_compact(world: World) -> None:
    bad = world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    assert not world.catalog.get_dataset(world.dataset).compaction_needed


def test_quarantining_again_keeps_the_first_reason(world: World, sql: psycopg.Connection) -> None:
    # Given a quarantined file (a redelivered step finds the same input bad again)
    bad = world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    before = _files(sql)
    # When it is quarantined a second time with another reason
    again = _quarantine(world, run, bad.id, reason="SchemaCastError: something else")
    # Then nothing changes and the answer says it already was
    assert not again.quarantined and again.file.quarantine_reason == REASON
    assert _files(sql) == before


@pytest.mark.parametrize("who", ["another run", "an expired lease", "a run no longer running"])
def test_only_the_run_holding_the_lease_may_quarantine(world: World, sql: psycopg.Connection, who: str) -> None:
    # Given a live fragment and a run holding the lease
    frag = world.fragment()
    run = world.running_run()
    quarantiner = run
    if who == "another run":
        quarantiner = uuid4()
        world.catalog.begin_run(run_id=quarantiner, dataset_id=world.dataset, trigger="manual")
        world.catalog.record_run_status(quarantiner, "running")
    elif who == "an expired lease":
        sql.execute("UPDATE datasets SET lease_expires_at = now() - interval '1 second'")
    else:
        world.catalog.record_run_status(run, "failed", {"error": "gone"})
    before = _files(sql)
    # When that run tries to quarantine it
    with pytest.raises(LeaseNotHeld):
        _quarantine(world, quarantiner, frag.id)
    # Then nothing changed
    assert _files(sql) == before


def test_a_removed_file_cannot_be_quarantined(world: World, sql: psycopg.Connection) -> None:
    frag = world.fragment()
    run = world.running_run()
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now() WHERE id = %s", (frag.id,))
    with pytest.raises(InputsNotLive):
        _quarantine(world, run, frag.id)


def test_a_file_of_another_dataset_or_an_unknown_run_is_not_found(world: World, catalog: Catalog) -> None:
    frag = world.fragment()
    run = world.running_run()
    other = World(catalog, owner=uuid4(), dataset=uuid4())
    theirs = other.fragment()
    with pytest.raises(CatalogNotFound):
        _quarantine(world, run, theirs.id)
    with pytest.raises(CatalogNotFound):
        _quarantine(world, uuid4(), frag.id)
    with pytest.raises(CatalogNotFound):
        world.catalog.quarantine_file(run_id=run, dataset_id=uuid4(), file_id=frag.id, step="Compact", reason="x")


@pytest.mark.parametrize(("step", "reason"), [("", "why"), ("Compact", ""), ("Compact", "   ")])
def test_a_quarantine_needs_a_step_and_a_reason(world: World, step: str, reason: str) -> None:
    frag = world.fragment()
    run = world.running_run()
    with pytest.raises(InvalidCatalogArgument):
        world.catalog.quarantine_file(run_id=run, dataset_id=world.dataset, file_id=frag.id, step=step, reason=reason)


def test_a_commit_refuses_a_quarantined_input_and_changes_nothing(world: World, sql: psycopg.Connection) -> None:
    # Given a run that quarantined one of two fragments
    good, bad = world.fragment(), world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    before = _files(sql)
    # When it tries to commit both as inputs anyway
    with pytest.raises(InputsNotLive) as caught:
        world.catalog.commit_compaction(
            run_id=run,
            dataset_id=world.dataset,
            removed=[good.id, bad.id],
            outputs=[world.output_for(run, [good, bad])],
        )
    # Then the quarantined one is named and nothing changed
    assert str(bad.id) in str(caught.value)
    assert _files(sql) == before


def test_the_rest_commits_and_every_registered_row_is_compacted_or_quarantined(
    world: World, sql: psycopg.Connection
) -> None:
    # Given four fragments, one of which the run quarantines
    frags = [world.fragment(rows=r) for r in (3, 5, 7, 11)]
    run = world.running_run()
    _quarantine(world, run, frags[2].id)
    rest = [f for f in frags if f.id != frags[2].id]
    # When the run commits the rest
    result = world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in rest], outputs=[world.output_for(run, rest)]
    )
    # Then it succeeds, nothing is left to compact, and catalog rows = compacted + quarantined rows
    assert result.committed and not result.compaction_needed and result.run.status == "succeeded"
    live = world.catalog.list_live_files(world.dataset)
    quarantined = world.catalog.list_quarantined(world.dataset)
    assert [f.kind for f in live] == ["compacted"]
    assert sum(f.row_count for f in frags) == sum(f.row_count for f in live) + sum(f.row_count for f in quarantined)
    assert sum(f.row_count for f in quarantined) == 7
    _counters_are_exact(sql, world.dataset)


def test_a_readmitted_file_is_live_and_pending_again(world: World, sql: psycopg.Connection) -> None:
    # Given a dataset whose only fragment was quarantined by a run that then ended
    bad = world.fragment(rows=4)
    run = world.running_run()
    _quarantine(world, run, bad.id)
    world.catalog.record_run_status(run, "failed", {"error": "x"})
    assert not world.catalog.get_dataset(world.dataset).compaction_needed
    # When an operator re-admits it
    result = world.catalog.readmit_quarantined(bad.id)
    # Then it is live again, without its quarantine, and the dataset is pending
    assert result.readmitted and result.file.quarantined_at is None and result.file.quarantine_reason is None
    assert [f.id for f in world.catalog.list_live_files(world.dataset)] == [bad.id]
    assert world.catalog.list_quarantined(world.dataset) == []
    ds = world.catalog.get_dataset(world.dataset)
    assert (ds.compaction_needed, ds.live_rows) == (True, 4)
    # And doing it again changes nothing
    assert not world.catalog.readmit_quarantined(bad.id).readmitted
    _counters_are_exact(sql, world.dataset)


def test_a_removed_or_unknown_file_cannot_be_readmitted(world: World, sql: psycopg.Connection) -> None:
    frag = world.fragment()
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now() WHERE id = %s", (frag.id,))
    with pytest.raises(InputsNotLive):
        world.catalog.readmit_quarantined(frag.id)
    with pytest.raises(CatalogNotFound):
        world.catalog.readmit_quarantined(uuid4())


def test_a_deleted_quarantined_file_becomes_garbage_and_keeps_its_record(world: World, sql: psycopg.Connection) -> None:
    # Given a quarantined file
    good, bad = world.fragment(), world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    # When an operator deletes it (no grace)
    result = world.catalog.delete_quarantined(bad.id)
    # Then it is removed, no longer listed as quarantined, and its object is due for deletion
    assert result.deleted and result.file.removed_at is not None and result.file.quarantine_reason == REASON
    assert world.catalog.list_quarantined(world.dataset) == []
    assert [g.id for g in world.catalog.list_garbage()] == [bad.id]
    assert [f.id for f in world.catalog.list_live_files(world.dataset)] == [good.id]
    # And doing it again changes nothing
    assert not world.catalog.delete_quarantined(bad.id).deleted
    _counters_are_exact(sql, world.dataset)


def test_a_deletion_with_grace_waits_for_it(world: World) -> None:
    bad = world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    world.catalog.delete_quarantined(bad.id, grace_seconds=3600)
    assert world.catalog.list_garbage() == []


def test_only_a_quarantined_file_can_be_deleted_this_way(world: World, sql: psycopg.Connection) -> None:
    frag = world.fragment()
    before = _files(sql)
    with pytest.raises(InvalidCatalogArgument):
        world.catalog.delete_quarantined(frag.id)
    assert _files(sql) == before


def test_quarantined_files_are_counted_over_every_dataset(world: World, catalog: Catalog) -> None:
    # Given nothing quarantined anywhere
    assert catalog.count_quarantined().files == 0
    # When two datasets quarantine three files (one of them then deleted)
    other = World(catalog, owner=uuid4(), dataset=uuid4())
    files = []
    for w in (world, other):
        a, b = w.fragment(rows=2), w.fragment(rows=3)
        run = w.running_run()
        for f in (a, b):
            w.catalog.quarantine_file(run_id=run, dataset_id=w.dataset, file_id=f.id, step="Compact", reason="r")
        files.append(b)
    catalog.delete_quarantined(files[1].id)
    # Then the count is of those still quarantined
    count = catalog.count_quarantined()
    assert (count.files, count.datasets, count.rows) == (3, 2, 7)
    assert count.oldest_at is not None


def test_a_quarantined_files_object_is_never_an_orphan(world: World) -> None:
    bad = world.fragment()
    run = world.running_run()
    _quarantine(world, run, bad.id)
    assert world.catalog.find_orphans([bad.object_key]) == []


def test_the_same_bytes_uploaded_again_are_a_duplicate_of_the_quarantined_fragment(world: World) -> None:
    bad = world.fragment(content="same bytes")
    run = world.running_run()
    _quarantine(world, run, bad.id)
    again = world.fragment(content="same bytes")
    assert isinstance(again, RegisteredFragment) and again.duplicate and again.id == bad.id
    assert not world.catalog.get_dataset(world.dataset).compaction_needed


# -- concurrency -------------------------------------------------------------------------------


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (released together by a barrier); each result or the exception."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def test_concurrent_quarantines_of_one_file_quarantine_it_once(world: World, sql: psycopg.Connection) -> None:
    for _ in range(5):
        frag = world.fragment()
        run = world.running_run()
        results = _race(*[partial(_quarantine, world, run, frag.id, reason=f"reason {i}") for i in range(8)])
        assert all(not isinstance(r, Exception) for r in results), results
        firsts = [r for r in results if r.quarantined]
        assert len(firsts) == 1
        assert {r.file.quarantine_reason for r in results} == {firsts[0].file.quarantine_reason}
        world.catalog.record_run_status(run, "failed", {"error": "next round"})
    _counters_are_exact(sql, world.dataset)


def test_a_quarantine_racing_a_commit_of_the_same_file_never_does_both(world: World, sql: psycopg.Connection) -> None:
    for _ in range(10):
        # Given a live fragment and a run about to commit it as an input
        frag = world.fragment(rows=3)
        run = world.running_run()
        output = world.output_for(run, [frag])
        # When the run's commit and a quarantine of that fragment race
        commit, quarantine = _race(
            partial(
                world.catalog.commit_compaction,
                run_id=run,
                dataset_id=world.dataset,
                removed=[frag.id],
                outputs=[output],
            ),
            partial(_quarantine, world, run, frag.id),
        )
        # Then exactly one of them happened: compacted, or quarantined with the commit refused
        row = sql.execute(
            "SELECT removed_at IS NOT NULL, quarantined_at IS NOT NULL FROM dataset_files WHERE id = %s", (frag.id,)
        ).fetchone()
        assert row is not None
        removed, quarantined = row
        if removed:
            assert not quarantined and isinstance(quarantine, LeaseNotHeld) and commit.committed
        else:
            assert quarantined and isinstance(commit, InputsNotLive) and quarantine.quarantined
            world.catalog.record_run_status(run, "failed", {"error": "next round"})
        _counters_are_exact(sql, world.dataset)


def test_counters_stay_exact_under_concurrent_uploads_quarantines_and_readmissions(
    world: World, sql: psycopg.Connection
) -> None:
    # Given a run holding the lease over twenty fragments
    frags = [world.fragment(rows=i + 1) for i in range(20)]
    run = world.running_run()
    # When uploads, quarantines and readmissions of them all happen at once
    calls: list[Callable[[], Any]] = []
    for i, f in enumerate(frags):
        calls.append(partial(_quarantine, world, run, f.id))
        if i % 3 == 0:
            calls.append(partial(world.catalog.readmit_quarantined, f.id))
        calls.append(partial(world.fragment, rows=100 + i))
    results = _race(*calls)
    # Then nothing failed and the counters match the rows
    assert [r for r in results if isinstance(r, Exception)] == []
    _counters_are_exact(sql, world.dataset)
    registered = sql.execute(
        "SELECT sum(row_count) FROM dataset_files WHERE dataset_id = %s AND kind = 'fragment'", (world.dataset,)
    ).fetchone()
    live = sum(f.row_count for f in world.catalog.list_live_files(world.dataset))
    quarantined = sum(f.row_count for f in world.catalog.list_quarantined(world.dataset))
    assert registered is not None and registered[0] == live + quarantined


def test_quarantine_over_supabase_rpc_matches_the_direct_transport(world: World, database_url: str) -> None:
    # Given the deployed transport (supabase-py through the PostgREST stand-in)
    with LocalPostgrest(database_url, "k") as server:
        remote = Catalog(SupabaseRpc(server.url, "k"))
        w = World(remote, owner=uuid4(), dataset=uuid4())
        bad = w.fragment()
        run = w.running_run()
        # When it quarantines, counts, lists and re-admits
        assert remote.quarantine_file(
            run_id=run, dataset_id=w.dataset, file_id=bad.id, step="Compact", reason="r"
        ).quarantined
        assert remote.count_quarantined().files == 1
        # Then both transports see the same
        assert remote.dataset_status(w.dataset) == world.catalog.dataset_status(w.dataset)
        assert remote.readmit_quarantined(bad.id).readmitted


@pytest.mark.parametrize(("expires_in", "held"), [("0 seconds", False), ("1 millisecond", True)])
def test_a_lease_expiring_at_this_very_moment_is_no_longer_held(
    world: World, sql: psycopg.Connection, expires_in: str, held: bool
) -> None:
    # Given a run whose lease expires exactly now (the transaction's now), or just after
    frag = world.fragment()
    run = world.running_run()
    # When it quarantines in that same transaction
    call = "SELECT quarantine_file(%s, %s, %s, 'Compact', 'reason')"
    try:
        with sql.transaction():
            sql.execute(f"UPDATE datasets SET lease_expires_at = now() + interval '{expires_in}' WHERE id = %s",
                        (world.dataset,))  # fmt: skip
            sql.execute(call, (run, world.dataset, frag.id))
        sqlstate = None
    except psycopg.Error as exc:
        sqlstate = exc.sqlstate
    # Then a lease that ends now is not held (FC409), one that ends later is
    assert sqlstate == (None if held else "FC409")
