"""logic/status.py: what mutation testing (make mutate MODULE=logic.status) found untested.

The status bodies against a real catalog (PostgreSQL) and moto's queues: a compacted file in a
table's counts, the quarantine timestamps and run ids, failures that name a dataset and a run,
and the caller's run and failure limits.
"""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.models import CompactedOutput
from fusou_compaction.logic.status import dataset_status_body, dlq_status_body

from .conftest import Api, parquet_bytes
from .test_routes import _quarantined

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_a_compacted_file_is_counted_as_compacted(api: Api) -> None:
    # Given a dataset whose two fragments were compacted into one file, then a new fragment
    catalog, dataset = api.deps.catalog, uuid4()
    frags = [api.upload(api.alice, dataset, parquet_bytes(2, seed=s)) for s in (1, 2)]
    run = uuid4()
    catalog.begin_run(run_id=run, dataset_id=dataset, trigger="manual")
    assert catalog.acquire_lease(dataset_id=dataset, run_id=run, lease_seconds=60).acquired
    catalog.record_run_status(run, "running")
    ids = [f["fragmentId"] for f in frags]
    output = CompactedOutput(
        table_name="battles",
        object_key=keys.compacted_key(dataset, "battles", run, 0),
        size_bytes=sum(f["sizeBytes"] for f in frags),
        row_count=4,
        schema_fingerprint=catalog.list_live_files(dataset)[0].schema_fingerprint,
        input_ids=ids,
    )
    assert catalog.commit_compaction(run_id=run, dataset_id=dataset, removed=ids, outputs=[output]).committed
    api.upload(api.alice, dataset, parquet_bytes(3, seed=3))
    # When its status is built
    battles = dataset_status_body(catalog, dataset)["tables"]["battles"]
    # Then the table holds one compacted file and one fragment (kills "compacted" misspelled)
    assert (battles["fragments"], battles["compacted"], battles["rows"]) == (1, 1, 7)


def test_a_quarantined_fragment_says_when_and_a_deleted_run_is_no_run_id(api: Api, database_url: str) -> None:
    # Given a quarantined fragment
    dataset, fragment, run = _quarantined(api)
    [listed] = api.deps.catalog.dataset_status(dataset).quarantined
    assert listed.quarantined_at is not None
    # When its status is built
    [entry] = dataset_status_body(api.deps.catalog, dataset)["quarantined"]
    # Then it says when it was quarantined (kills `if quarantined_at and False`)
    assert entry["at"] == listed.quarantined_at.isoformat() and entry["runId"] == str(run)
    # And once the run that quarantined it is deleted (the schema sets the reference to NULL),
    # no run is named (kills `if quarantined_by_run or True`, which says "None")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM compaction_runs WHERE id = %s", (run,))
    [entry] = dataset_status_body(api.deps.catalog, dataset)["quarantined"]
    assert entry["runId"] is None and entry["fragmentId"] == str(fragment)


def test_the_status_shows_as_many_runs_as_asked(api: Api) -> None:
    # Given a dataset with three runs
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    runs = [uuid4() for _ in range(3)]
    for run in runs:
        api.deps.catalog.begin_run(run_id=run, dataset_id=dataset, trigger="manual")
    # When its status is asked with at most two runs, Then the two newest are listed (kills runs
    # None and the argument dropped, which list the catalog's default of ten)
    body = dataset_status_body(api.deps.catalog, dataset, runs=2)
    assert [r["runId"] for r in body["runs"]] == [str(runs[2]), str(runs[1])]


def test_failures_name_their_dataset_and_run_and_as_many_as_asked(api: Api) -> None:
    # Given two recorded failures, the newer naming a dataset and a run, and a quarantined fragment
    dataset_q, _, _ = _quarantined(api)
    oldest = api.deps.catalog.count_quarantined().oldest_at
    assert oldest is not None
    dataset, run = uuid4(), uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    api.deps.catalog.begin_run(run_id=run, dataset_id=dataset, trigger="manual")
    api.deps.catalog.record_failure(source="dlq", error="older", message_id="m-1", error_step="Consumer", body="{")
    api.deps.catalog.record_failure(
        source="workflow", error="newer", run_id=run, dataset_id=dataset, error_step="Compact"
    )
    # When the DLQ status is asked with at most one failure
    body = dlq_status_body(api.deps.catalog, api.deps.queue, api.deps.dlq, limit=1)
    # Then only the newer is listed (kills the limit None), with its dataset and run (kills
    # `if dataset_id and False`, `str(None)`, and the same for the run)
    assert [(f["error"], f["datasetId"], f["runId"]) for f in body["recentFailures"]] == [
        ("newer", str(dataset), str(run))
    ]
    # And the quarantine count says since when (kills `if oldest_at and False`)
    assert body["quarantined"]["oldestAt"] == oldest.isoformat()
    assert body["quarantined"]["datasets"] == 1 and dataset_q != dataset
