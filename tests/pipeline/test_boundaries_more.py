"""More of the pipeline's promised numbers, just inside and just outside, in the logic that enforces
them, with the deployed values:

- the daily run re-sends a presigned upload still in ``staging/`` an hour after it landed
  (logic/presigned.resend_stranded_uploads, FUSOU_STAGING_MIN_AGE_SECONDS);
- an upload whose bytes already sit under their key in an object over an hour old writes them under
  a key of its own (logic/uploads.store_fragment, SHARE_MAX_AGE);
- one run takes at most 10,000 bins (GetMetadata, StepConfig.max_bins_per_run);
- a bin's inputs travel in its Map item up to 4 KB of JSON (GetMetadata, StepConfig.inline_bin_bytes);
- housekeeping stops 30 s before the invocation's end (logic/scheduled.housekeeping);
- the inventory sweep names up to 20 keys outside our prefixes (logic/orphans.reconcile_inventory);
- the daily orphan sweep looks back 6 h (and 5 s of slack) before its last watermark
  (logic/orphans.sweep_touched_datasets, begin_orphan_sweep).
"""

from __future__ import annotations

import hashlib
import io
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from fusou_compaction import keys
from fusou_compaction.adapters.alerts import LogAlerts
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.s3_inventory import S3InventoryReports
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.handlers.deps import Dependencies
from fusou_compaction.local.inventory import publish_inventory_report
from fusou_compaction.logic.orphans import UNKNOWN_SAMPLE, reconcile_inventory, sweep_touched_datasets
from fusou_compaction.logic.presigned import resend_stranded_uploads
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import BinInput
from fusou_compaction.settings import Settings
from fusou_compaction.topology import inventory_report_prefix

from .conftest import execution_input, upload_fragments

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
MiB = 1024 * 1024
LOOKBACK = timedelta(hours=6, seconds=5)  # the minimum age, plus logic/orphans.py's SLACK


def _parquet(seed: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"battle_id": [seed, seed + 1], "hp": [10, 20]}), buf)
    return buf.getvalue()


# -- stranded presigned uploads: re-sent an hour after they landed --------------------------------


@pytest.mark.parametrize(("age", "resent"), [(HOUR - MS, False), (HOUR, True)])
def test_a_staged_upload_is_resent_an_hour_after_it_landed_and_not_before(
    local_aws: Any, sqs_client: Any, catalog: Catalog, store: S3ObjectStore, age: timedelta, resent: bool
) -> None:
    # Given the deployed minimum age, a register-retry queue, and a presigned upload in staging/
    # whose S3 event was lost
    settings = Settings(catalog_transport="postgres", database_url="postgresql://unused", region=local_aws.region)
    assert settings.staging_min_age_seconds == HOUR.total_seconds()
    retry_url = sqs_client.create_queue(QueueName=f"register-retry-{uuid4().hex[:12]}")["QueueUrl"]
    sfn = boto3.client("stepfunctions", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)
    deps = Dependencies(
        settings=settings,
        catalog=catalog,
        store=store,
        queue=SqsQueue(sqs_client, retry_url),
        dlq=SqsQueue(sqs_client, retry_url),
        orchestrator=StepFunctionsOrchestrator(sfn, ""),
        alerts=LogAlerts(),
        register_retry=SqsQueue(sqs_client, retry_url),
    )
    key = keys.staging_key(uuid4(), "battle", uuid4())
    store.put(key, _parquet(1))
    landed = store.head(key)
    assert landed is not None
    # When the daily run looks at it a millisecond short of an hour after it landed, or at the hour
    report = resend_stranded_uploads(
        deps, min_age=timedelta(seconds=settings.staging_min_age_seconds), now=landed.last_modified + age
    )
    # Then it is handed to the register function from the hour on
    assert (key in report.resent) is resent
    assert report.left_young == (0 if resent else 1)
    sent = sqs_client.receive_message(QueueUrl=retry_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(sent) == (1 if resent else 0)


# -- an object under a fragment's key is shared for an hour -------------------------------------


@pytest.mark.parametrize(("age", "own_key"), [(HOUR, False), (HOUR + MS, True)])
def test_bytes_already_stored_are_shared_for_an_hour_and_written_again_after(
    catalog: Catalog, store: S3ObjectStore, age: timedelta, own_key: bool
) -> None:
    # Given the object of these exact bytes already under their content-addressed key (a
    # concurrent upload of the same bytes, or an orphan the sweep may be deleting)
    owner, dataset, data = uuid4(), uuid4(), _parquet(7)
    shared = keys.fragment_key(dataset, "battle", hashlib.sha256(data).hexdigest())
    store.put(shared, data)
    found = store.head(shared)
    assert found is not None
    # When they are uploaded an hour after that object was written, or a millisecond later
    stored = store_fragment(
        catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=data, now=found.last_modified + age
    )
    # Then up to the hour the fragment is registered at that object; past it, under a key of its own
    (live,) = catalog.list_live_files(dataset)
    assert not stored.duplicate
    assert (live.object_key != shared) is own_key
    if own_key:
        assert live.object_key.startswith(shared.removesuffix(".parquet") + ".")
        assert store.get_bytes(live.object_key) == data


# -- one run takes at most 10,000 bins ------------------------------------------------------------


@pytest.mark.parametrize(("files", "planned"), [(10_000, 10_000), (10_001, 10_000)])
def test_a_run_plans_10000_bins_and_leaves_the_10001st_for_the_next(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection, files: int, planned: int
) -> None:
    # Given a table of `files` live fragments of 1 MiB each, and a target of 1 MiB: a bin each
    # (registered in the catalog only: GetMetadata reads no object)
    owner, dataset = uuid4(), uuid4()
    first = hashlib.sha256(b"first").hexdigest()
    catalog.register_fragment(
        dataset_id=dataset,
        owner_id=owner,
        table="battle",
        object_key=keys.fragment_key(dataset, "battle", first),
        size_bytes=MiB,
        row_count=100,
        sha256=first,
        schema_fingerprint="",
    )
    sql.execute(
        "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,"
        " schema_fingerprint) SELECT %s, 'battle', 'fragment', 'datasets/' || %s || '/battle/fragments/' ||"
        " md5(g::text) || md5(g::text) || '.parquet', %s, 100, md5(g::text) || md5(g::text), ''"
        " FROM generate_series(2, %s) g",
        (dataset, str(dataset), MiB, files),
    )
    # When GetMetadata plans it with the deployed bound
    config = StepConfig(lease_seconds=60, target_file_size=MiB)
    assert config.max_bins_per_run == 10_000
    steps = CompactionSteps(catalog, store, config)
    ex = execution_input(dataset)
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    # Then 10,000 bins are planned: all of them, or all but the last, which waits for the next run
    assert plan.bin_count == planned
    assert sum(b.input_count for b in plan.bins) == planned


# -- housekeeping stops with 30 s left ----------------------------------------------------------


@pytest.mark.parametrize(("seconds_left", "finished"), [(30.0, False), (30.5, True)])
def test_housekeeping_stops_with_30_seconds_of_the_invocation_left(
    catalog: Catalog, store: S3ObjectStore, seconds_left: float, finished: bool
) -> None:
    # Given the deployed stop (housekeeping's default), and an invocation with 30 s or 30.5 s left
    # When housekeeping runs
    report = housekeeping(catalog, store, orphan_min_age=timedelta(hours=6), time_left=lambda: seconds_left)
    # Then with 30 s left it stops before deleting anything (finished False: the sequel goes on);
    # with a little more it does its work
    assert report.finished is finished
    assert report.garbage_finished is finished


# -- the daily orphan sweep looks back 6 h before its watermark -----------------------------------


@pytest.mark.parametrize(
    ("before_watermark", "swept"), [(LOOKBACK, True), (LOOKBACK + timedelta(milliseconds=1), False)]
)
def test_the_daily_sweep_looks_back_six_hours_before_its_watermark(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection, before_watermark: timedelta, swept: bool
) -> None:
    # Given a dataset with an orphan (a registration that failed), whose last catalog change was
    # exactly 6 h and 5 s (the slack) before the last sweep's watermark, or a millisecond earlier
    six_hours = timedelta(hours=6)
    dataset = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5).dataset
    orphan = keys.fragment_key(dataset, "battle", "f" * 64)
    store.put(orphan, b"orphan")
    sql.execute("UPDATE orphan_sweeps SET watermark = now() WHERE sweep = 'touched'")
    sql.execute(
        "UPDATE dataset_files SET added_at = (SELECT watermark FROM orphan_sweeps WHERE sweep = 'touched')"
        " - make_interval(secs => %s) WHERE dataset_id = %s",
        (before_watermark.total_seconds(), dataset),
    )
    # When the daily sweep runs with the deployed minimum age (its objects all old enough by then)
    report = sweep_touched_datasets(
        catalog,
        store,
        owner="t",
        orphan_min_age=six_hours,
        time_left=lambda: math.inf,
        stop_with_seconds_left=30,
        now=datetime.now(UTC) + 2 * six_hours,
    )
    # Then the dataset is swept (its orphan deleted) only if it changed within the window, its start included
    assert report.finished
    assert report.swept_datasets == (1 if swept else 0)
    assert store.exists(orphan) is not swept


# -- a bin's inputs inline in its item up to 4 KB -------------------------------------------------


def _inline_and_length(catalog: Catalog, store: S3ObjectStore, dataset: Any) -> tuple[bool, int]:
    """GetMetadata in a new run, with the deployed configuration: whether the dataset's one bin
    travels inline in its item, and its inputs' JSON length."""
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60))
    ex = execution_input(dataset)
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    catalog.release_lease(dataset_id=ex.message.dataset_id, run_id=ex.run_id)
    (ref,) = plan.bins
    by_reference = store.exists(keys.plan_bin_key(ex.run_id, ref.table, ref.index))
    inline = not by_reference
    if inline:
        assert ref.inputs is not None
        return True, len(TypeAdapter(list[BinInput]).dump_json(ref.inputs, by_alias=True))
    inputs = TypeAdapter(list[BinInput]).validate_json(
        store.get_bytes(keys.plan_bin_key(ex.run_id, ref.table, ref.index))
    )
    return False, len(TypeAdapter(list[BinInput]).dump_json(inputs, by_alias=True))


def test_a_bins_inputs_of_exactly_4_kb_travel_in_its_item_and_one_byte_more_through_s3(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a dataset of one bin (10 small fragments, in the catalog only)
    assert StepConfig().inline_bin_bytes == 4096
    dataset = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5).dataset
    sql.execute(
        "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,"
        " schema_fingerprint) SELECT %s, 'battle', 'fragment', 'datasets/' || %s || '/battle/fragments/' ||"
        " md5(g::text) || md5(g::text) || '.parquet', 1000, 5, md5(g::text) || md5(g::text), ''"
        " FROM generate_series(1, 9) g",
        (dataset, str(dataset)),
    )
    inline, length = _inline_and_length(catalog, store, dataset)
    assert inline and length < 4096

    def grow_last_key(by: int) -> None:
        sql.execute(
            "UPDATE dataset_files SET object_key = replace(object_key, '.parquet', repeat('x', %s) || '.parquet')"
            " WHERE id = (SELECT id FROM dataset_files WHERE dataset_id = %s ORDER BY seq DESC LIMIT 1)",
            (by, dataset),
        )

    # When one input's key grows so that the inputs take exactly 4,096 bytes, Then they travel inline
    grow_last_key(4096 - length)
    assert _inline_and_length(catalog, store, dataset) == (True, 4096)
    # When it grows by one byte more, Then they go to their own object in S3
    grow_last_key(1)
    assert _inline_and_length(catalog, store, dataset) == (False, 4097)


# -- the inventory sweep names up to 20 unknown keys ----------------------------------------------


@pytest.mark.parametrize("foreign", [20, 21])
def test_the_inventory_sweep_names_20_unknown_keys_and_counts_the_21st(
    local_aws: Any, s3_client: Any, store: S3ObjectStore, catalog: Catalog, foreign: int
) -> None:
    # Given the bucket's S3 Inventory report listing 20 or 21 keys under no prefix of ours
    inventory = S3ObjectStore(f"inventory-{uuid4().hex[:12]}", endpoint_url=local_aws.endpoint_url)
    s3_client.create_bucket(Bucket=inventory.bucket)
    keys_ = [f"exports/{i:02d}.csv" for i in range(foreign)]
    for key in keys_:
        store.put(key, b"x")
    publish_inventory_report(store, inventory)
    # When the inventory sweep runs
    assert UNKNOWN_SAMPLE == 20
    report = reconcile_inventory(
        catalog,
        store,
        S3InventoryReports(inventory, inventory_report_prefix(store.bucket)),
        owner="t",
        orphan_min_age=timedelta(hours=6),
        every=timedelta(days=7),
        time_left=lambda: math.inf,
        stop_with_seconds_left=30,
        now=datetime.now(UTC) + timedelta(hours=7),
    )
    # Then every one is counted, and at most 20 are named
    assert report.finished and report.unknown == foreign
    assert len(report.unknown_sample) == 20 and set(report.unknown_sample) <= set(keys_)
    assert all(store.exists(k) for k in keys_)
