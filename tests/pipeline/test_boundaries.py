"""The pipeline's promised numbers, just inside and just outside, in the logic that enforces them."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from uuid import uuid4

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import BinInput, CompactItem, ExecutionInput
from fusou_compaction.settings import Settings

from .conftest import execution_input, live_rows, row_multiset, upload_fragments

SIX_HOURS = timedelta(hours=6)
STATE_LIMIT = 256 * 1024  # Step Functions' payload limit, per state input or output


def _run_all(steps: CompactionSteps, ex: ExecutionInput) -> None:
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    results = [
        steps.compact(CompactItem(run_id=ex.run_id, dataset_id=ex.message.dataset_id, plan_key=plan.plan_key, bin=b))
        for b in plan.bins
    ]
    steps.update(ex, plan, results)


def test_the_documented_ages_are_the_defaults() -> None:
    fields = Settings.model_fields
    assert fields["orphan_min_age_seconds"].default == SIX_HOURS.total_seconds()
    assert fields["grace_period_seconds"].default == StepConfig().grace_period_seconds == 24 * 3600


@pytest.mark.parametrize(
    ("age_past_six_hours", "deleted"), [(timedelta(seconds=-1), False), (timedelta(seconds=1), True)]
)
def test_an_orphan_is_deleted_only_once_older_than_six_hours(
    catalog: Catalog, store: S3ObjectStore, age_past_six_hours: timedelta, deleted: bool
) -> None:
    # Given an object no catalog row knows (a crash between the S3 write and the registration), in
    # a dataset that had an upload since the last sweep (logic/orphans.py)
    dataset = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5).dataset
    key = keys.fragment_key(dataset, "battle", "0" * 64)
    store.put(key, b"orphan")
    (info,) = list(store.list_objects(key))
    # When the sweep runs when it is 6 h old, less or more a second
    housekeeping(catalog, store, orphan_min_age=SIX_HOURS, now=info.last_modified + SIX_HOURS + age_past_six_hours)
    # Then it is deleted only past 6 h
    assert store.exists(key) is not deleted


def test_rows_out_equal_rows_in_when_rows_are_duplicated(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given fragments repeating rows, within one fragment and across fragments (other bytes, same rows)
    owner, dataset = uuid4(), uuid4()
    rows = pa.table({"battle_id": [1, 1, 2, 3, 3, 3], "hp": [10, 10, 20, 30, 30, 30]})
    for codec in ("snappy", "zstd", "none"):
        buf = io.BytesIO()
        pq.write_table(rows, buf, compression=codec)
        stored = store_fragment(catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=buf.getvalue())
        assert not stored.duplicate
    # When the dataset is compacted
    _run_all(CompactionSteps(catalog, store, StepConfig(lease_seconds=60)), execution_input(dataset))
    # Then every copy of every row is there, no more and no fewer
    out = live_rows(catalog, store, dataset, "battle")
    assert out is not None and out.num_rows == 18
    assert row_multiset(out) == row_multiset(pa.concat_tables([rows] * 3))


def _bin_travels_inline(catalog: Catalog, store: S3ObjectStore, dataset: object, inline_bin_bytes: int) -> bool:
    """Whether GetMetadata, in a new run, put the dataset's one bin's inputs in its Map item."""
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, inline_bin_bytes=inline_bin_bytes))
    ex = execution_input(dataset)  # type: ignore[arg-type]
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    catalog.release_lease(dataset_id=ex.message.dataset_id, run_id=ex.run_id)
    (item,) = json.loads(store.get_bytes(plan.items_key))
    by_reference = store.exists(keys.plan_bin_key(ex.run_id, item["table"], item["index"]))
    assert (item["inputs"] is None) == by_reference
    return not by_reference


def test_a_bin_of_exactly_the_inline_limit_travels_in_its_item_and_one_byte_more_goes_to_s3(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a dataset of one bin whose inputs, as JSON, take n bytes
    up = upload_fragments(catalog, store, tables=("battle",), fragments=3, rows=5)
    ex = execution_input(up.dataset)
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60))
    steps.validate(ex)
    (ref,) = steps.get_metadata(ex).bins
    catalog.release_lease(dataset_id=up.dataset, run_id=ex.run_id)
    assert ref.inputs is not None and ref.input_count == 3
    n = len(TypeAdapter(list[BinInput]).dump_json(ref.inputs, by_alias=True))
    # When the limit is n, Then the inputs travel in the item; when it is n - 1, through S3
    assert _bin_travels_inline(catalog, store, up.dataset, n)
    assert not _bin_travels_inline(catalog, store, up.dataset, n - 1)


def test_the_state_of_a_large_dataset_stays_far_under_256_kb(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a table of 4,000 live fragments (registered in the catalog; GetMetadata reads no object)
    up = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5)
    sql.execute(
        "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,"
        " schema_fingerprint) SELECT %s, 'battle', 'fragment', 'datasets/' || %s || '/battle/fragments/' ||"
        " md5(g::text) || md5(g::text) || '.parquet', 1048576, 100, md5(g::text) || md5(g::text), ''"
        " FROM generate_series(1, 4000) g",
        (up.dataset, str(up.dataset)),
    )
    # When GetMetadata plans it into a bin per fragment (a target of one fragment's size)
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, target_file_size=1024 * 1024))
    ex = execution_input(up.dataset)
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    # Then the state holds where the plan is, in a few hundred bytes, though the plan itself (the
    # Map's items, in S3) would not fit in a state at all
    assert plan.bin_count >= 4000
    assert len(plan.model_dump_json(by_alias=True)) < 1024
    assert len(store.get_bytes(plan.items_key)) > STATE_LIMIT
