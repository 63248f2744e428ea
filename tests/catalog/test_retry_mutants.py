"""The retry backoff's conditions (migration 0007) that mutation testing (make mutate-sql) found
untested."""

from __future__ import annotations

from datetime import timedelta
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


def test_a_dataset_that_did_not_fail_is_never_due_for_a_retry(sql: psycopg.Connection) -> None:
    # _retry_due_at's contract: no due time without a failure, whatever last_failed_at says
    due = "SELECT _retry_due_at(%s, %s, 60, 600)"
    at = sql.execute("SELECT now() - interval '1 hour'").fetchone()
    assert at is not None
    assert sql.execute(due, (0, at[0])).fetchone() == (None,)
    assert sql.execute(due, (1, None)).fetchone() == (None,)
    assert sql.execute(due + " - %s", (1, at[0], at[0])).fetchone() == (timedelta(seconds=60),)
