"""The pipeline's promised numbers, just inside and just outside, in the logic that enforces them."""

from __future__ import annotations

import io
from datetime import timedelta
from uuid import uuid4

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import CompactItem, ExecutionInput
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


def _plan_json_size(
    catalog: Catalog, store: S3ObjectStore, dataset: object, inline_plan_bytes: int
) -> tuple[int, bool]:
    """The size of GetMetadata's output and whether the bins travelled inline, for one new run."""
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, inline_plan_bytes=inline_plan_bytes))
    ex = execution_input(dataset)  # type: ignore[arg-type]
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    catalog.release_lease(dataset_id=ex.message.dataset_id, run_id=ex.run_id)
    return len(plan.model_dump_json(by_alias=True)), plan.plan_key is None


def test_a_plan_of_exactly_the_inline_limit_stays_inline_and_one_byte_more_goes_to_s3(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a dataset whose plan, inline, takes n bytes
    up = upload_fragments(catalog, store, fragments=3, rows=5)
    n, inline = _plan_json_size(catalog, store, up.dataset, 10**9)
    assert inline
    # When the limit is n, Then the plan stays inline; when it is n - 1, it travels through S3
    assert _plan_json_size(catalog, store, up.dataset, n) == (n, True)
    slim, inline = _plan_json_size(catalog, store, up.dataset, n - 1)
    assert not inline and slim < n


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
    # When GetMetadata plans it with the default settings
    default = StepConfig().inline_plan_bytes
    size, inline = _plan_json_size(catalog, store, up.dataset, default)
    # Then the plan travels by reference: its state is under the inline limit, itself well under
    # 256 KB, though the same plan inline would not fit in a state at all
    full, _ = _plan_json_size(catalog, store, up.dataset, 10**9)
    assert full > STATE_LIMIT
    assert not inline and size <= default < STATE_LIMIT // 2
