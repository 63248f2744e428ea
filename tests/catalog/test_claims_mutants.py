"""claim_pending_datasets' conditions (migration 0007) that mutation testing (make mutate-sql)
found untested."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument

from .conftest import World


def pending(catalog: Catalog, n: int) -> list[World]:
    worlds = [World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(n)]
    for w in worlds:
        w.fragment()
    return worlds


@pytest.mark.parametrize("limit", [1, 1000])
def test_a_claim_limit_of_1_or_1000_is_accepted(catalog: Catalog, limit: int) -> None:
    worlds = pending(catalog, 2)
    claimed = catalog.claim_pending_datasets(limit=limit, claimer="cron")
    assert claimed == [w.dataset for w in worlds][:limit]


@pytest.mark.parametrize("limit", [None, 0, 1001])
def test_a_claim_limit_outside_1_to_1000_is_refused_by_the_catalog(
    catalog: Catalog, sql: psycopg.Connection, limit: int | None
) -> None:
    # Given a pending dataset (so a limit of 0 would have something to leave out)
    pending(catalog, 1)
    # When the function itself is asked with the limit (no client in front of it)
    with pytest.raises(psycopg.Error) as refused:
        sql.execute("SELECT claim_pending_datasets(%s, 'cron')", (limit,))
    # Then it refuses it, and nothing is claimed
    assert refused.value.sqlstate == "FC422"
    assert sql.execute("SELECT count(*) FROM datasets WHERE claimed_by IS NOT NULL").fetchone() == (0,)


def test_the_limit_is_checked_even_when_nothing_is_pending(catalog: Catalog) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.claim_pending_datasets(limit=1001, claimer="cron")


@pytest.mark.parametrize(
    ("base", "cap", "accepted"),
    [(0, 0, True), (60, 60, True), (-1, 60, False), (None, 60, False), (60, None, False), (61, 60, False)],
)
def test_backoff_seconds_must_satisfy_0_le_base_le_max(
    catalog: Catalog, sql: psycopg.Connection, base: int | None, cap: int | None, accepted: bool
) -> None:
    (w,) = pending(catalog, 1)
    call = "SELECT claim_pending_datasets(10, 'cron', 3600, %s, %s)"
    if accepted:
        row = sql.execute(call, (base, cap)).fetchone()
        assert row is not None and row[0] == [str(w.dataset)]
    else:
        with pytest.raises(psycopg.Error) as refused:
            sql.execute(call, (base, cap))
        assert refused.value.sqlstate == "FC422"


def test_with_no_backoff_a_failed_dataset_is_claimed_at_once(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a dataset whose run failed just now
    (w,) = pending(catalog, 1)
    run = w.running_run()
    catalog.record_run_status(run, "failed", {"error_step": "Compact", "error": "boom"})
    # When the scheduler claims with a backoff of 0 s, Then it is due already (its due time is now)
    row = sql.execute("SELECT claim_pending_datasets(10, 'cron', 3600, 0, 0)").fetchone()
    assert row is not None and row[0] == [str(w.dataset)]


@pytest.mark.parametrize("column", ["claim_expires_at", "lease_expires_at"])
def test_a_claim_or_lease_ending_at_this_very_moment_still_keeps_the_scheduler_off(
    catalog: Catalog, sql: psycopg.Connection, column: str
) -> None:
    # Given a pending dataset claimed (or leased) until exactly now, the transaction's now: the
    # scheduler claims what is free strictly after the end (as the sweep frees it)
    (w,) = pending(catalog, 1)
    owner = "claimed_by = 'a'" if column == "claim_expires_at" else f"lease_owner = '{uuid4()}'"
    claim = "SELECT claim_pending_datasets(10, 'cron')"
    with sql.transaction():
        sql.execute(f"UPDATE datasets SET {owner}, {column} = now()")
        assert sql.execute(claim).fetchone() == ([],)
        sql.execute(f"UPDATE datasets SET {column} = now() - interval '1 microsecond'")
        assert sql.execute(claim).fetchone() == ([str(w.dataset)],)


@pytest.mark.parametrize(("ago", "claimed"), [("60 seconds", True), ("59.999999 seconds", False)])
def test_a_failed_dataset_is_claimable_at_the_very_moment_its_backoff_ends(
    catalog: Catalog, sql: psycopg.Connection, ago: str, claimed: bool
) -> None:
    # Given a dataset that failed once, 60 s (a base of 60 s) or a microsecond less ago
    (w,) = pending(catalog, 1)
    with sql.transaction():
        sql.execute(f"UPDATE datasets SET consecutive_failures = 1, last_failed_at = now() - interval '{ago}'")
        row = sql.execute("SELECT claim_pending_datasets(10, 'cron', 3600, 60, 600)").fetchone()
    # Then it is due exactly when its backoff ends
    assert row == (([str(w.dataset)] if claimed else []),)
