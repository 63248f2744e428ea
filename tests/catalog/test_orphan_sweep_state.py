"""The orphan sweeps' place in the catalog (migration 0010): the touched sweep's window of changed
datasets and its watermark, the inventory sweep's report and position, and the lease over each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument, LeaseNotHeld
from fusou_compaction.catalog.models import OrphanSweepDataset

from .conftest import World

LOOKBACK = 3600


def _expire_lease(sql: psycopg.Connection, sweep: str = "touched") -> None:
    sql.execute("UPDATE orphan_sweeps SET lease_expires_at = now() - interval '1 second' WHERE sweep = %s", (sweep,))


def _age(sql: psycopg.Connection, dataset: object, hours: float) -> None:
    """Move a dataset's catalog changes ``hours`` into the past."""
    ago = timedelta(hours=hours)
    sql.execute("UPDATE dataset_files SET added_at = added_at - %s WHERE dataset_id = %s", (ago, dataset))
    sql.execute("UPDATE compaction_runs SET updated_at = updated_at - %s WHERE dataset_id = %s", (ago, dataset))


def _pending(catalog: Catalog, owner: str = "a") -> set[object]:
    return {d.dataset_id for d in catalog.next_orphan_sweep_datasets(owner=owner, limit=1000)}


def test_a_window_lists_the_datasets_changed_in_it_and_no_other(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a dataset with an upload, one with a failed run, one with a rejected upload, and one
    # whose changes all lie before the window (the watermark less the lookback)
    uploaded, ran, rejected, untouched = (World(catalog, uuid4(), uuid4()) for _ in range(4))
    uploaded.fragment()
    ran.fragment()
    run = ran.running_run()
    catalog.record_run_status(run, "failed", {"error_step": "Compact", "error": "boom"})
    catalog.record_failure(source="workflow", error="upload rejected: not Parquet", dataset_id=rejected.dataset)
    untouched.fragment()
    _age(sql, untouched.dataset, hours=3)
    _age(sql, ran.dataset, hours=0.5)  # inside the lookback
    sql.execute("UPDATE orphan_sweeps SET watermark = now() - interval '1 hour' WHERE sweep = 'touched'")
    # When a sweep opens its window
    window = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=LOOKBACK)
    # Then the window ends now, starts a lookback before the watermark, and holds the three changed datasets
    assert window.acquired and not window.resumed and window.pending == 3
    assert window.window_from is not None and window.window_until is not None
    assert window.window_until - window.window_from == pytest.approx(timedelta(hours=2), abs=timedelta(seconds=5))
    assert _pending(catalog) == {uploaded.dataset, ran.dataset, rejected.dataset}


def test_the_watermark_moves_only_when_every_dataset_of_the_window_is_swept(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given a window of two touched datasets
    a, b = World(catalog, uuid4(), uuid4()), World(catalog, uuid4(), uuid4())
    a.fragment()
    b.fragment()
    window = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=LOOKBACK)
    assert window.pending == 2
    # When one is swept
    first = catalog.record_orphan_sweep_progress(owner="a", done=[a.dataset])
    # Then the window is not finished and the other is still to sweep
    assert not first.finished and first.pending == 1 and _pending(catalog) == {b.dataset}
    # When the other is swept
    last = catalog.record_orphan_sweep_progress(owner="a", done=[b.dataset])
    # Then the watermark is the window's end, and the next window starts a lookback before it
    assert last.finished and window.window_until is not None and last.watermark == window.window_until
    following = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=LOOKBACK)
    assert following.window_from == window.window_until - timedelta(seconds=LOOKBACK)


def test_a_crashed_sweep_is_resumed_where_it_stopped_once_its_lease_runs_out(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given a sweep that swept one of three datasets and listed another up to some key, then crashed
    worlds = [World(catalog, uuid4(), uuid4()) for _ in range(3)]
    for w in worlds:
        w.fragment()
    window = catalog.begin_orphan_sweep(owner="crashed", lease_seconds=600, lookback_seconds=LOOKBACK)
    half = keys.fragment_key(worlds[1].dataset, "battle", "1" * 64)
    catalog.record_orphan_sweep_progress(
        owner="crashed",
        done=[worlds[0].dataset],
        partial=[OrphanSweepDataset(dataset_id=worlds[1].dataset, start_after=half)],
    )
    # When another invocation comes while the lease holds
    refused = catalog.begin_orphan_sweep(owner="next", lease_seconds=60, lookback_seconds=LOOKBACK)
    # Then it is refused (no two sweeps at once)
    assert not refused.acquired
    # When it comes again after the lease ran out
    _expire_lease(sql)
    resumed = catalog.begin_orphan_sweep(owner="next", lease_seconds=60, lookback_seconds=LOOKBACK)
    # Then it takes the same window, with what was left, from where the crashed one stopped
    assert resumed.acquired and resumed.resumed and resumed.window_until == window.window_until
    rest = {d.dataset_id: d.start_after for d in catalog.next_orphan_sweep_datasets(owner="next")}
    assert rest == {worlds[1].dataset: half, worlds[2].dataset: None}
    # And the crashed invocation, should it wake up, may record nothing any more
    with pytest.raises(LeaseNotHeld):
        catalog.record_orphan_sweep_progress(owner="crashed", done=[worlds[2].dataset])


def test_a_released_sweep_is_taken_at_once_and_only_its_holder_releases_it(catalog: Catalog) -> None:
    # Given a sweep held by one invocation
    assert catalog.begin_orphan_sweep(owner="a", lease_seconds=600, lookback_seconds=LOOKBACK).acquired
    # When another tries to release it, Then nothing changes
    assert not catalog.release_orphan_sweep(sweep="touched", owner="b")
    assert not catalog.begin_orphan_sweep(owner="b", lease_seconds=60, lookback_seconds=LOOKBACK).acquired
    # When its holder releases it, Then the other takes it at once, long before the lease would run out
    assert catalog.release_orphan_sweep(sweep="touched", owner="a")
    assert catalog.begin_orphan_sweep(owner="b", lease_seconds=60, lookback_seconds=LOOKBACK).acquired


def test_a_window_is_only_recorded_by_its_leaseholder(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a sweep whose lease ran out
    World(catalog, uuid4(), uuid4()).fragment()
    catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=LOOKBACK)
    _expire_lease(sql)
    # When its owner asks for datasets or records progress, Then the catalog refuses
    with pytest.raises(LeaseNotHeld):
        catalog.next_orphan_sweep_datasets(owner="a")
    with pytest.raises(LeaseNotHeld):
        catalog.record_orphan_sweep_progress(owner="a", done=[])


def test_a_sweep_needs_an_owner_and_a_lease(catalog: Catalog) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.begin_orphan_sweep(owner="", lease_seconds=60, lookback_seconds=0)
    with pytest.raises(InvalidCatalogArgument):
        catalog.begin_orphan_sweep(owner="a", lease_seconds=0, lookback_seconds=0)
    with pytest.raises(InvalidCatalogArgument):
        catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=-1)


def test_find_orphans_keeps_the_outputs_of_queued_and_running_runs_and_nothing_else(world: World) -> None:
    # Given the output keys of a queued, a running and a failed run, a catalogued key, and strays
    frag = world.fragment()
    running, queued = world.running_run(), uuid4()
    world.catalog.begin_run(run_id=queued, dataset_id=world.dataset, trigger="manual")
    other = World(world.catalog, uuid4(), uuid4())
    other.fragment()
    failed = other.running_run()
    other.catalog.record_run_status(failed, "failed", {"error": "x"})
    out = {r: keys.compacted_key(world.dataset, "battle", r, 0) for r in (queued, running)}
    out[failed] = keys.compacted_key(other.dataset, "battle", failed, 0)
    strays = [keys.compacted_key(world.dataset, "battle", uuid4(), 3), "datasets/x/battle/compacted/not-a-uuid/p"]
    # When the catalog is asked which are orphans
    found = world.catalog.find_orphans([frag.object_key, *out.values(), *strays])
    # Then only the failed run's output and the strays are
    assert found == sorted([out[failed], *strays])


def _created(hours_ago: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours_ago)


def test_an_inventory_report_is_taken_when_due_and_resumed_from_its_position(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    week = 7 * 86400
    # Given no report was ever swept: the newest is taken
    first = catalog.begin_inventory_sweep(
        owner="a", lease_seconds=60, every_seconds=week, report="r1", report_created_at=_created(200)
    )
    assert first.acquired and first.report == "r1" and (first.file, first.rows) == (0, 0) and not first.resumed
    # When it gets through one file and part of the next, and its invocation ends
    catalog.record_inventory_progress(owner="a", report="r1", file=1, rows=5000)
    _expire_lease(sql, "inventory")
    # Then the next invocation resumes it there, even with a newer report delivered
    again = catalog.begin_inventory_sweep(
        owner="b", lease_seconds=60, every_seconds=week, report="r2", report_created_at=_created(30)
    )
    assert again.report == "r1" and (again.file, again.rows) == (1, 5000) and again.resumed
    # When it is finished
    assert catalog.finish_inventory_sweep(owner="b", report="r1", completed=True)
    # Then a report created less than the interval after it is not due, one created later is
    early = catalog.begin_inventory_sweep(
        owner="b", lease_seconds=60, every_seconds=week, report="r2", report_created_at=_created(200 - 167)
    )
    assert early.acquired and early.report is None
    due = catalog.begin_inventory_sweep(
        owner="b", lease_seconds=60, every_seconds=week, report="r3", report_created_at=_created(200 - 168)
    )
    assert due.report == "r3" and not due.resumed
    status = catalog.orphan_sweep_status()["inventory"]
    assert status["last_report"] == "r1" and status["report"] == "r3"


def test_an_abandoned_report_is_not_the_last_one_swept(catalog: Catalog) -> None:
    # Given a report in progress whose files expired
    catalog.begin_inventory_sweep(
        owner="a", lease_seconds=60, every_seconds=0, report="r1", report_created_at=_created(1)
    )
    # When it is abandoned
    assert catalog.finish_inventory_sweep(owner="a", report="r1", completed=False)
    # Then nothing is in progress, nothing counts as swept, and the next report is taken at once
    status = catalog.orphan_sweep_status()["inventory"]
    assert status["report"] is None and status["last_report"] is None
    assert (
        catalog.begin_inventory_sweep(
            owner="a", lease_seconds=60, every_seconds=0, report="r2", report_created_at=_created(0)
        ).report
        == "r2"
    )


def test_progress_of_another_report_is_refused(catalog: Catalog) -> None:
    catalog.begin_inventory_sweep(
        owner="a", lease_seconds=60, every_seconds=0, report="r1", report_created_at=_created(1)
    )
    with pytest.raises(InvalidCatalogArgument):
        catalog.record_inventory_progress(owner="a", report="r0", file=1, rows=0)
    assert not catalog.finish_inventory_sweep(owner="a", report="r0", completed=True)
