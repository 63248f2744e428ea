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
