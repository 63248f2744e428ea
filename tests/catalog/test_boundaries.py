"""The catalog's promised numbers and comparisons, each just inside and just outside its boundary."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument

from .conftest import World


def _pending(catalog: Catalog, n: int) -> list[World]:
    from uuid import uuid4

    worlds = [World(catalog=catalog, owner=uuid4(), dataset=uuid4()) for _ in range(n)]
    for w in worlds:
        w.fragment()
    return worlds


def _set(sql: psycopg.Connection, table: str, assignment: str, dataset: UUID, where: str = "true") -> None:
    column = "id" if table == "datasets" else "dataset_id"
    sql.execute(f"UPDATE {table} SET {assignment} WHERE {column} = %s AND {where}", (dataset,))


@pytest.mark.parametrize(("expires_in", "reclaimable"), [("1 second", False), ("-1 second", True)])
def test_a_scheduler_claim_is_reclaimable_once_it_expired_and_not_before(
    catalog: Catalog, sql: psycopg.Connection, expires_in: str, reclaimable: bool
) -> None:
    # Given a dataset claimed by a trigger whose message was never sent (it died)
    (w,) = _pending(catalog, 1)
    assert catalog.claim_pending_datasets(limit=10, claimer="cron-1") == [w.dataset]
    _set(sql, "datasets", f"claim_expires_at = now() + interval '{expires_in}'", w.dataset)
    # When a later trigger claims, Then it gets the dataset only once the claim expired
    assert catalog.claim_pending_datasets(limit=10, claimer="cron-2") == ([w.dataset] if reclaimable else [])


@pytest.mark.parametrize(("expires_in", "swept"), [("1 second", False), ("-1 second", True)])
def test_the_sweep_frees_an_expired_claim_and_leaves_a_live_one(
    catalog: Catalog, sql: psycopg.Connection, expires_in: str, swept: bool
) -> None:
    (w,) = _pending(catalog, 1)
    catalog.claim_pending_datasets(limit=10, claimer="cron-1")
    _set(sql, "datasets", f"claim_expires_at = now() + interval '{expires_in}'", w.dataset)
    catalog.sweep_expired_leases()
    (claimed_by,) = sql.execute("SELECT claimed_by FROM datasets WHERE id = %s", (w.dataset,)).fetchone()  # type: ignore[misc]
    assert (claimed_by is None) is swept


@pytest.mark.parametrize(("expires_in", "taken"), [("1 second", False), ("-1 second", True)])
def test_a_lease_is_taken_over_once_it_expired_and_not_before(
    world: World, sql: psycopg.Connection, expires_in: str, taken: bool
) -> None:
    from uuid import uuid4

    world.fragment()
    holder = world.running_run()
    _set(sql, "datasets", f"lease_expires_at = now() + interval '{expires_in}'", world.dataset)
    other = uuid4()
    world.catalog.begin_run(run_id=other, dataset_id=world.dataset, trigger="manual")
    got = world.catalog.acquire_lease(dataset_id=world.dataset, run_id=other, lease_seconds=60)
    assert got.acquired is taken
    assert world.catalog.get_dataset(world.dataset).lease_owner == (other if taken else holder)


@pytest.mark.parametrize(("expires_in", "swept"), [("1 second", False), ("-1 second", True)])
def test_the_sweep_fails_a_run_whose_lease_expired_and_not_before(
    world: World, sql: psycopg.Connection, expires_in: str, swept: bool
) -> None:
    world.fragment()
    run = world.running_run()
    _set(sql, "datasets", f"lease_expires_at = now() + interval '{expires_in}'", world.dataset)
    freed = world.catalog.sweep_expired_leases()
    assert (len(freed) == 1) is swept
    (status,) = sql.execute("SELECT status FROM compaction_runs WHERE id = %s", (run,)).fetchone()  # type: ignore[misc]
    assert status == ("failed" if swept else "running")


@pytest.mark.parametrize(("rows_out_delta", "accepted"), [(-1, False), (0, True), (1, False)])
def test_rows_out_must_equal_rows_in_neither_fewer_nor_more(world: World, rows_out_delta: int, accepted: bool) -> None:
    # Given two fragments of 10 rows each (the second a duplicate of the first's rows, in other bytes)
    frags = [world.fragment(rows=10), world.fragment(rows=10)]
    run = world.running_run()
    out = world.output_for(run, frags)
    out = out.model_copy(update={"row_count": out.row_count + rows_out_delta})
    # When the run commits 19, 20 or 21 rows out, Then only 20 commit
    commit = lambda: world.catalog.commit_compaction(  # noqa: E731
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[out]
    )
    if accepted:
        assert commit().committed
    else:
        with pytest.raises(InvalidCatalogArgument, match="rows in <> rows out"):
            commit()


def test_replaced_objects_wait_24_hours_by_default(world: World, sql: psycopg.Connection) -> None:
    # Given a commit that replaces two fragments, with the catalog's default grace period
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
    )
    rows = sql.execute(
        "SELECT delete_after - removed_at FROM dataset_files WHERE dataset_id = %s AND removed_at IS NOT NULL",
        (world.dataset,),
    ).fetchall()
    assert [r[0] for r in rows] == [timedelta(hours=24)] * 2


@pytest.mark.parametrize(("delete_after", "garbage"), [("1 second", False), ("-1 second", True)])
def test_a_replaced_object_is_garbage_only_once_its_grace_period_is_over(
    world: World, sql: psycopg.Connection, delete_after: str, garbage: bool
) -> None:
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    world.catalog.commit_compaction(
        run_id=run,
        dataset_id=world.dataset,
        removed=[f.id for f in frags],
        outputs=[world.output_for(run, frags)],
        grace_seconds=3600,
    )
    _set(
        sql,
        "dataset_files",
        f"delete_after = now() + interval '{delete_after}'",
        world.dataset,
        "removed_at IS NOT NULL",
    )
    listed = {g.id for g in world.catalog.list_garbage()}
    assert listed == ({f.id for f in frags} if garbage else set())
    assert len(world.catalog.list_garbage(limit=1)) == (1 if garbage else 0)
    # And once their objects are deleted, they are never listed again
    if garbage:
        assert world.catalog.mark_objects_deleted([f.id for f in frags]) == 2
        assert world.catalog.list_garbage() == []
