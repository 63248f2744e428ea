"""The retry backoff's conditions (migration 0007) that mutation testing (make mutate-sql) found
untested."""

from __future__ import annotations

from uuid import uuid4

import psycopg

from fusou_compaction.catalog.client import Catalog

from .conftest import World


def _failures(sql: psycopg.Connection, w: World) -> int:
    row = sql.execute("SELECT consecutive_failures FROM datasets WHERE id = %s", (w.dataset,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_success_resets_only_its_own_datasets_failures(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a dataset whose last run failed, and another dataset
    failing, good = (World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(2))
    failing.fragment()
    run = failing.running_run()
    catalog.record_run_status(run, "failed", {"error_step": "Compact", "error": "boom"})
    frags = [good.fragment(), good.fragment()]
    # When the other dataset's run succeeds
    ok = good.running_run()
    catalog.commit_compaction(run_id=ok, dataset_id=good.dataset, removed=[f.id for f in frags],
                              outputs=[good.output_for(ok, frags)])  # fmt: skip
    # Then the failing dataset still counts its failure
    assert (_failures(sql, failing), _failures(sql, good)) == (1, 0)
