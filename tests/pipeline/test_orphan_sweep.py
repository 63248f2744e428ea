"""The orphan sweeps (issue 19, item 5) on the S3 emulator and a real catalog: the daily sweep
lists only the datasets that changed, the inventory sweep finds orphans anywhere without listing
the bucket, both respect the minimum age, resume where they stopped, and never delete what the
catalog knows or what an upload in flight is about to register."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from fusou_compaction import keys, synth
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.s3_inventory import (
    S3InventoryReports,
    checksum,
    encode_manifest,
    encode_rows,
    report_folder,
)
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.local.inventory import publish_inventory_report
from fusou_compaction.local.stack import LocalStack, scheduled_event
from fusou_compaction.logic.orphans import OrphanReport, reconcile_inventory, sweep_touched_datasets
from fusou_compaction.logic.scheduled import housekeeping
from fusou_compaction.logic.steps import CompactionSteps, StepConfig
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.pipeline.models import CompactItem
from fusou_compaction.ports.object_store import ObjectInfo
from fusou_compaction.topology import inventory_report_prefix

from .conftest import execution_input, upload_fragments, wait_for

SIX_HOURS = timedelta(hours=6)
LATER = timedelta(hours=7)  # when the sweeps run: what was written in the test is past six hours


def _forever() -> float:
    return math.inf


class ListCalls:
    """Every ListObjectsV2 request the store's client sends, by its prefix."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.prefixes: list[str] = []
        store.client.meta.events.register("provide-client-params.s3.ListObjectsV2", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        self.prefixes.append(params.get("Prefix", ""))

    def datasets(self) -> set[UUID]:
        return {UUID(p.split("/")[1]) for p in self.prefixes if p.startswith(keys.DATASETS_PREFIX) and p.count("/") > 1}


@pytest.fixture
def inventory_store(local_aws: LocalAws, s3_client: Any) -> S3ObjectStore:
    name = f"inventory-{uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return S3ObjectStore(name, endpoint_url=local_aws.endpoint_url)


def _reports(store: S3ObjectStore, inventory_store: S3ObjectStore) -> S3InventoryReports:
    return S3InventoryReports(inventory_store, inventory_report_prefix(store.bucket))


def _touched(
    catalog: Catalog, store: S3ObjectStore, *, now: datetime | None = None, owner: str = "t", **kw: Any
) -> OrphanReport:
    return sweep_touched_datasets(
        catalog,
        store,
        owner=owner,
        orphan_min_age=SIX_HOURS,
        time_left=kw.pop("time_left", _forever),
        stop_with_seconds_left=30,
        now=now or datetime.now(UTC) + LATER,
        **kw,
    )


def _reconcile(
    catalog: Catalog, store: S3ObjectStore, reports: S3InventoryReports, *, now: datetime | None = None, **kw: Any
) -> OrphanReport:
    return reconcile_inventory(
        catalog,
        store,
        reports,
        owner=kw.pop("owner", "t"),
        orphan_min_age=SIX_HOURS,
        every=timedelta(days=7),
        time_left=kw.pop("time_left", _forever),
        stop_with_seconds_left=30,
        now=now or datetime.now(UTC) + LATER,
        **kw,
    )


def _fragment(catalog: Catalog, store: S3ObjectStore, dataset: UUID | None = None, seed: int = 0) -> tuple[UUID, str]:
    """One fragment uploaded (object and row): the dataset is touched. Returns (dataset, key)."""
    up = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=5, seed=seed, dataset=dataset)
    (f,) = catalog.list_live_files(up.dataset)
    return up.dataset, f.object_key


def _orphan(store: S3ObjectStore, dataset: UUID, tag: str = "f") -> str:
    """An object under the dataset's prefix that no row knows (a registration that failed)."""
    key = keys.fragment_key(dataset, "battle", (tag * 64)[:64])
    store.put(key, b"orphan")
    return key


def _put_many(store: S3ObjectStore, keys_: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys_))


def _age_changes(sql: psycopg.Connection, hours: float) -> None:
    """Everything the catalog saw so far happened ``hours`` ago, before the last sweep's window."""
    ago = timedelta(hours=hours)
    sql.execute("UPDATE dataset_files SET added_at = added_at - %s", (ago,))
    sql.execute("UPDATE compaction_runs SET updated_at = updated_at - %s", (ago,))
    sql.execute("UPDATE compaction_failures SET at = at - %s", (ago,))
    sql.execute("UPDATE orphan_sweeps SET watermark = now() WHERE sweep = 'touched'")


# The daily sweep: only what changed -----------------------------------------------------------------
def test_only_the_datasets_that_changed_are_listed(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given five datasets with an orphan each, none changed since the last sweep
    quiet = [_fragment(catalog, store, seed=i)[0] for i in range(5)]
    quiet_orphans = [_orphan(store, d) for d in quiet]
    _age_changes(sql, hours=48)
    # And two datasets that got an upload since, each with an orphan
    busy = [_fragment(catalog, store, seed=10 + i)[0] for i in range(2)]
    busy_orphans = [_orphan(store, d) for d in busy]
    lists = ListCalls(store)
    # When the daily sweep runs
    report = _touched(catalog, store)
    # Then it listed the prefixes of the two changed datasets only, one List call each
    assert sorted(lists.prefixes) == sorted(keys.dataset_prefix(d) for d in busy)
    assert report.finished and report.swept_datasets == 2 and report.deleted == 2
    # And their orphans are gone, the others are left to the inventory sweep
    assert not any(store.exists(k) for k in busy_orphans)
    assert all(store.exists(k) for k in quiet_orphans)


def test_an_orphan_deep_in_a_large_dataset_is_found_across_rounds_and_invocations(
    catalog: Catalog, store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a dataset of 2,500 catalogued objects and an orphan whose key sorts after all of them
    dataset, _ = _fragment(catalog, store)
    many = [keys.fragment_key(dataset, "battle", f"{i:064x}") for i in range(2500)]
    sql.execute(
        "INSERT INTO dataset_files (dataset_id, table_name, kind, object_key, size_bytes, row_count, sha256,"
        " schema_fingerprint) SELECT %s, 'battle', 'fragment', k, 1, 1, lpad(to_hex(i), 64, '0'), 'fp'"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS t (k, i)",
        (dataset, many),
    )
    _put_many(store, many)
    deep = keys.fragment_key(dataset, "battle", "f" * 64)
    store.put(deep, b"orphan")
    lists = ListCalls(store)
    # When the sweep has time for one round only (two List pages of the dataset), then a later
    # invocation goes on (another owner: the first gave the lease back when it stopped)
    clock = iter([900.0, 900.0, 10.0])
    first = _touched(catalog, store, time_left=lambda: next(clock, 10.0))
    second = _touched(catalog, store, owner="later")
    # Then the first stopped unfinished after 2,000 keys, and the second resumed after them
    assert (first.finished, first.examined, first.deleted) == (False, 2000, 0)
    assert (second.finished, second.examined, second.deleted) == (True, 502, 1)
    assert len(lists.prefixes) == 3  # 1,000 keys a page: two pages, then the rest
    # And only the orphan is gone
    assert not store.exists(deep)
    assert all(store.exists(k) for k in many[-3:]) and len(catalog.list_live_files(dataset)) == 2501


class CrashingStore:
    """The store, but the process dies while listing one dataset's prefix."""

    def __init__(self, inner: S3ObjectStore, crash_on: UUID) -> None:
        self.inner, self.crash_on = inner, crash_on

    def list_objects(self, prefix: str, **kw: Any) -> Iterator[Any]:
        if prefix == keys.dataset_prefix(self.crash_on):
            raise RuntimeError("Sandbox.Timedout")
        return self.inner.list_objects(prefix, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_crashed_sweep_resumes_from_its_watermark_without_listing_again_what_it_swept(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given six changed datasets with an orphan each
    datasets = sorted(_fragment(catalog, store, seed=i)[0] for i in range(6))
    orphans = {d: _orphan(store, d) for d in datasets}
    # When the sweep, three datasets a round, crashes in its second round
    with pytest.raises(RuntimeError):
        _touched(catalog, CrashingStore(store, datasets[4]), round_size=3)  # type: ignore[arg-type]
    # Then the first round's orphans are gone, and the window is still open
    assert not any(store.exists(orphans[d]) for d in datasets[:3])
    status = catalog.orphan_sweep_status()["touched"]
    assert status["pending"] == 3 and status["window_until"] is not None
    # When the next invocation comes (the crashed one's lease given back, or run out)
    assert catalog.orphan_sweep_status()["touched"]["lease_owner"] is None
    lists = ListCalls(store)
    resumed = _touched(catalog, store, owner="next", round_size=3)
    # Then it lists only the three left, deletes their orphans, and moves the watermark to the window's end
    assert lists.datasets() == set(datasets[3:]) and resumed.finished
    assert not any(store.exists(k) for k in orphans.values())
    after = catalog.orphan_sweep_status()["touched"]
    assert after["pending"] == 0 and after["window_until"] is None and after["watermark"] == status["window_until"]


# The inventory sweep: anywhere in the bucket, without listing it ---------------------------------
def test_the_inventory_sweep_finds_orphans_anywhere_and_leaves_what_is_not_ours(
    catalog: Catalog, store: S3ObjectStore, inventory_store: S3ObjectStore, sql: psycopg.Connection
) -> None:
    # Given a dataset that has not changed for days, with a live fragment and an orphan
    quiet, live = _fragment(catalog, store)
    in_quiet = _orphan(store, quiet)
    _age_changes(sql, hours=48)
    # And an orphan in a dataset the catalog never heard of (its registration never happened)
    in_unknown = _orphan(store, uuid4())
    # And objects outside datasets/: a staged upload, a plan, and something that is not ours
    staged = keys.staging_key(uuid4(), "battle", uuid4())
    plan = keys.plan_bin_key(uuid4(), "battle", 0)
    foreign = "exports/2026/report.csv"
    for key in (staged, plan, foreign):
        store.put(key, b"x")
    # And S3 Inventory's report of the bucket, two rows a data file
    publish_inventory_report(store, inventory_store, rows_per_file=2)
    lists = ListCalls(store)
    # When the inventory sweep runs
    report = _reconcile(catalog, store, _reports(store, inventory_store))
    # Then both orphans are gone and the live fragment stays
    assert not store.exists(in_quiet) and not store.exists(in_unknown) and store.exists(live)
    assert report.finished and report.deleted == 2 and report.examined == 6
    # And staging/, plans/ and the foreign key stay; the foreign one is reported
    assert all(store.exists(k) for k in (staged, plan, foreign))
    assert (report.not_swept, report.unknown, report.unknown_sample) == (2, 1, [foreign])
    # And the data bucket was not listed at all
    assert lists.prefixes == []
    # And the same report is not swept twice
    assert _reconcile(catalog, store, _reports(store, inventory_store)).report is None


def _report_saying(inventory_store: S3ObjectStore, store: S3ObjectStore, objects: list[ObjectInfo]) -> None:
    """A report, as S3 delivers it, listing exactly these objects as it saw them."""
    prefix = inventory_report_prefix(store.bucket)
    data = encode_rows(store.bucket, objects)
    inventory_store.put(f"{prefix}data/only.csv.gz", data)
    created = datetime.now(UTC) - timedelta(hours=1)
    manifest = encode_manifest(
        source_bucket=store.bucket,
        destination_bucket=inventory_store.bucket,
        created_at=created,
        files=[(f"{prefix}data/only.csv.gz", data)],
    )
    folder = f"{prefix}{report_folder(created)}/"
    inventory_store.put(folder + "manifest.json", manifest)
    inventory_store.put(folder + "manifest.checksum", checksum(manifest))


def test_an_object_written_again_since_the_report_is_not_deleted(
    catalog: Catalog, store: S3ObjectStore, inventory_store: S3ObjectStore
) -> None:
    # Given a report that saw an orphan seven hours old, deleted since, and its key written again
    # just now by an upload whose registration is on its way
    key = _orphan(store, uuid4())
    _report_saying(inventory_store, store, [ObjectInfo(key, 6, datetime.now(UTC) - LATER, None)])
    # When the inventory sweep runs now
    report = _reconcile(catalog, store, _reports(store, inventory_store), now=datetime.now(UTC))
    # Then the catalog calls the key an orphan, but the object is not the one the report saw: it stays
    assert report.finished and report.examined == 1 and report.deleted == 0
    assert store.exists(key)


def test_the_inventory_sweep_resumes_in_the_middle_of_a_report(
    catalog: Catalog, store: S3ObjectStore, inventory_store: S3ObjectStore
) -> None:
    # Given 30 orphans in unknown datasets and a report of 10 rows a file
    orphans = [_orphan(store, uuid4(), tag) for tag in "0123456789abcdef" + "0123456789abcd"]
    publish_inventory_report(store, inventory_store, rows_per_file=10)
    reports = _reports(store, inventory_store)
    # When the sweep runs out of time at its first look at the clock (row 4 of the first file)
    first = _reconcile(catalog, store, reports, time_left=iter([900.0, 10.0]).__next__, check_time_every=4)
    # Then it deleted the 4 rows it read, and recorded its place
    assert (first.finished, first.examined, first.deleted) == (False, 4, 4)
    assert catalog.orphan_sweep_status()["inventory"]["rows"] == 4
    # When the next invocation goes on
    second = _reconcile(catalog, store, reports, check_time_every=4)
    # Then it reads the 26 rows left, each once, and every orphan is gone
    assert (second.finished, second.examined, second.deleted) == (True, 26, 26)
    assert not any(store.exists(k) for k in orphans)


# Both sweeps: the minimum age, what the catalog knows, uploads in flight -------------------------
@pytest.mark.parametrize("sweep", ["touched", "inventory"])
@pytest.mark.parametrize(("past_six_hours", "deleted"), [(timedelta(seconds=-1), False), (timedelta(seconds=1), True)])
def test_an_orphan_is_deleted_only_once_older_than_six_hours(
    catalog: Catalog,
    store: S3ObjectStore,
    inventory_store: S3ObjectStore,
    sweep: str,
    past_six_hours: timedelta,
    deleted: bool,
) -> None:
    # Given an orphan in a dataset that just had an upload
    dataset, _ = _fragment(catalog, store)
    key = _orphan(store, dataset)
    info = store.head(key)
    assert info is not None
    publish_inventory_report(store, inventory_store)
    # When a sweep runs when the orphan is 6 h old, less or more a second
    now = info.last_modified + SIX_HOURS + past_six_hours
    if sweep == "touched":
        _touched(catalog, store, now=now)
    else:
        _reconcile(catalog, store, _reports(store, inventory_store), now=now)
    # Then it is deleted only past 6 h
    assert store.exists(key) is not deleted


def _compact(catalog: Catalog, store: S3ObjectStore, dataset: UUID) -> None:
    steps = CompactionSteps(catalog, store, StepConfig(lease_seconds=60, grace_period_seconds=86_400))
    ex = execution_input(dataset)
    assert steps.validate(ex).action == "compact"
    plan = steps.get_metadata(ex)
    results = [
        steps.compact(CompactItem(run_id=ex.run_id, dataset_id=dataset, plan_key=plan.plan_key, bin=b))
        for b in plan.bins
    ]
    assert steps.update(ex, plan, results).committed


def test_no_sweep_deletes_an_object_the_catalog_knows(
    catalog: Catalog, store: S3ObjectStore, inventory_store: S3ObjectStore
) -> None:
    # Given a compacted dataset (its replaced fragments within their grace period), a fragment
    # uploaded since, a quarantined fragment, and the written output of a run still running
    up = upload_fragments(catalog, store, tables=("battle", "ship_state"), fragments=3, rows=10)
    _compact(catalog, store, up.dataset)
    upload_fragments(
        catalog, store, tables=("battle",), fragments=1, rows=10, seed=7, dataset=up.dataset, owner=up.owner
    )
    other = upload_fragments(catalog, store, tables=("battle",), fragments=2, rows=10, seed=9)
    run = uuid4()
    catalog.begin_run(run_id=run, dataset_id=other.dataset, trigger="manual")
    assert catalog.acquire_lease(dataset_id=other.dataset, run_id=run, lease_seconds=600).acquired
    catalog.record_run_status(run, "running")
    bad = catalog.list_live_files(other.dataset)[0]
    catalog.quarantine_file(run_id=run, dataset_id=other.dataset, file_id=bad.id, step="Compact", reason="corrupt")
    in_flight = keys.compacted_key(other.dataset, "battle", run, 0)
    store.put(in_flight, b"half a run")
    before = {o.key for d in (up.dataset, other.dataset) for o in store.list_objects(keys.dataset_prefix(d))}
    publish_inventory_report(store, inventory_store)
    # When both sweeps run with every object past the minimum age
    touched = _touched(catalog, store)
    inventory = _reconcile(catalog, store, _reports(store, inventory_store))
    # Then nothing was deleted
    after = {o.key for d in (up.dataset, other.dataset) for o in store.list_objects(keys.dataset_prefix(d))}
    assert (touched.deleted, inventory.deleted) == (0, 0) and after == before
    assert any("/compacted/" in k for k in before) and in_flight in before and bad.object_key in before


def test_an_object_uploaded_during_the_sweep_is_not_deleted(catalog: Catalog, store: S3ObjectStore) -> None:
    # Given an upload whose object is written and whose registration has not happened yet
    dataset, _ = _fragment(catalog, store)
    writing = keys.fragment_key(dataset, "battle", "a" * 64)
    store.put(writing, b"registration follows")
    # When the daily sweep runs now (with the real clock)
    report = _touched(catalog, store, now=datetime.now(UTC))
    # Then the young object is left alone
    assert report.finished and store.exists(writing)


class UploadBeforeDelete:
    """The store, but an upload of the same bytes is stored and registered between the sweep's
    verdict on an orphan (no catalog row) and its delete."""

    def __init__(self, inner: S3ObjectStore, upload: Callable[[], Any]) -> None:
        self.inner, self.upload = inner, upload
        self.uploaded: Any = None

    def delete_many(self, keys_: list[str]) -> list[str]:
        if self.uploaded is None:
            self.uploaded = self.upload()
        return self.inner.delete_many(keys_)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_bytes_uploaded_again_while_the_sweep_deletes_their_orphan_stay_readable(
    catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given an orphan: a fragment whose registration failed, now seven hours old
    dataset, _ = _fragment(catalog, store)  # the dataset exists and changed
    frag = next(synth.iter_fragments(tables=["battle"], fragments=1, rows_per_fragment=5, seed=3))
    orphan = keys.fragment_key(dataset, "battle", hashlib.sha256(frag.data).hexdigest())
    store.put(orphan, frag.data)
    later = datetime.now(UTC) + LATER
    owner = catalog.get_dataset(dataset).owner_id

    def upload_again() -> Any:
        return store_fragment(
            catalog, store, owner_id=owner, dataset_id=dataset, table="battle", data=frag.data, now=later
        )

    racing = UploadBeforeDelete(store, upload_again)
    # When the sweep judges it an orphan, and the client uploads the same bytes again before the delete
    report = _touched(catalog, racing, now=later)  # type: ignore[arg-type]
    # Then the orphan is deleted, and the fragment registered meanwhile still has its object
    assert racing.uploaded is not None and not racing.uploaded.duplicate and report.deleted == 1
    live = {f.object_key for f in catalog.list_live_files(dataset)}
    assert orphan not in live
    assert all(store.get_bytes(k) for k in live)
    assert frag.data in {store.get_bytes(k) for k in live}


# Housekeeping: both sweeps, under one time budget -------------------------------------------------
def test_housekeeping_runs_both_sweeps_and_resumes_what_it_could_not_finish(
    catalog: Catalog, store: S3ObjectStore, inventory_store: S3ObjectStore
) -> None:
    # Given an orphan in a changed dataset and one in a dataset the catalog never heard of
    dataset, _ = _fragment(catalog, store)
    touched_orphan, unknown_orphan = _orphan(store, dataset), _orphan(store, uuid4())
    publish_inventory_report(store, inventory_store)
    reports = _reports(store, inventory_store)
    later = datetime.now(UTC) + LATER
    # When housekeeping runs out of time after the daily sweep
    # the clock's looks: garbage, the daily sweep's lease and round; then out of time
    clock = iter([900.0] * 3 + [10.0] * 100)
    first = housekeeping(
        catalog, store, orphan_min_age=SIX_HOURS, now=later, inventory=reports, time_left=lambda: next(clock)
    )
    # Then it did the daily sweep, not the inventory sweep, and says it is not finished
    assert first.touched is not None and first.touched.finished and first.inventory is None and not first.finished
    assert not store.exists(touched_orphan) and store.exists(unknown_orphan)
    # When the next invocation comes
    second = housekeeping(catalog, store, orphan_min_age=SIX_HOURS, now=later, inventory=reports)
    # Then the inventory sweep deletes the other orphan, and housekeeping is finished
    assert second.finished and second.inventory is not None and second.inventory.deleted == 1
    assert not store.exists(unknown_orphan) and second.orphans_deleted == 1


# The scheduled function: the local stack's inventory stand-in, and a sequel for what is left ------
def test_the_scheduled_run_reads_the_inventory_report_the_local_stack_delivers(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    # Given an object under a prefix that is not ours, and an orphan too young to delete
    foreign = f"exports/{uuid4()}.csv"
    deps.store.put(foreign, b"x")
    young = _orphan(deps.store, uuid4())  # type: ignore[arg-type]
    # When the daily run comes (the stack delivers S3 Inventory's report first)
    result = stack.run_scheduled()
    # Then its inventory sweep read that report, named the foreign key, and kept both objects
    inventory = result["orphanSweep"]["inventory"]
    assert inventory["report"].endswith("/manifest.json") and inventory["finished"]
    assert foreign in inventory["unknownSample"] and inventory["examined"] >= 2
    assert deps.store.exists(foreign) and deps.store.exists(young)
    assert result["housekeepingFinished"] is True and result["continued"] is False


class RunningOutContext:
    """A Lambda context whose remaining time drops 100 s per look (from 400 s): the drain stops at
    300 s, housekeeping has time for the garbage and the daily sweep's lease, not for a round."""

    function_name = "scheduled"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:scheduled"
    memory_limit_in_mb = 256
    aws_request_id = "req"
    function_version = "$LATEST"

    def __init__(self) -> None:
        self.seconds = 500.0

    def get_remaining_time_in_millis(self) -> int:
        self.seconds -= 100
        return int(self.seconds * 1000)


def test_housekeeping_that_runs_out_of_time_goes_on_in_the_functions_sequel(stack: LocalStack) -> None:
    from fusou_compaction.handlers import scheduled as scheduled_handler

    deps = stack.deps
    assert deps is not None
    stack.scheduled_sequels.clear()
    # Given a dataset that just changed
    _fragment(deps.catalog, deps.store, seed=42)  # type: ignore[arg-type]
    # When the daily run runs out of time in its orphan sweep
    first = scheduled_handler.handler(scheduled_event(), RunningOutContext())
    # Then it says housekeeping is unfinished and continues itself
    assert first["housekeepingFinished"] is False and first["continued"] is True
    # And its sequel, told so, finishes the sweep (the changed dataset listed) and stops there
    sequel = wait_for(lambda: stack.scheduled_sequels and stack.scheduled_sequels[0], timeout=60)
    assert sequel["continuation"] == 1 and sequel["housekeepingFinished"] is True and sequel["continued"] is False
    assert sequel["orphanSweep"]["touched"]["sweptDatasets"] >= 1
