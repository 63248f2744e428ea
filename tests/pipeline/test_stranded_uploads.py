"""No presigned upload is lost between S3 and the catalog.

On the local stack, moto's bucket notification reaches the register function as Lambda's
asynchronous invocation (retried twice, then sent to the register-retry queue). When that chain
gives up (the catalog was down throughout), the scheduled run finds the upload still in staging/
and hands it back to the register function, which registers it once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, CatalogUnavailable
from fusou_compaction.handlers import register
from fusou_compaction.handlers.deps import Dependencies, use_dependencies
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.local.stack import LocalStack, StackOptions
from fusou_compaction.logic.presigned import (
    PresignedUpload,
    issue_presigned_upload,
    resend_stranded_uploads,
    stranded_upload_record,
)
from fusou_compaction.ports.messaging import ReceivedMessage

from ..conftest import load_event
from .conftest import wait_for


class CatalogDown:
    """A catalog transport whose every call fails as an unreachable Supabase does."""

    calls = 0

    def call(self, function: str, params: Any) -> Any:
        CatalogDown.calls += 1
        raise CatalogUnavailable("Supabase unreachable: [Errno 111] Connection refused")

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    options = StackOptions(
        serve_api=False, run_daily_schedule=False, step_time_scale=0.001, register_async_retry_delay_seconds=0.05
    )
    with LocalStack(options) as s:
        yield s


@pytest.fixture
def deps(stack: LocalStack) -> Iterator[Dependencies]:
    assert stack.deps is not None
    yield stack.deps
    use_dependencies(stack.deps)


def parquet(rows: int, seed: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"id": list(range(seed * 1000, seed * 1000 + rows)), "v": [f"r{i}" for i in range(rows)]}), buf
    )
    return buf.getvalue()


def presigned_put(deps: Dependencies, owner: UUID, dataset: UUID, data: bytes) -> PresignedUpload:
    """What `POST upload-url` then the client's PUT do."""
    grant = issue_presigned_upload(
        deps.store,
        owner_id=owner,
        dataset_id=dataset,
        table="battles",
        size_bytes=len(data),
        sha256_hex=hashlib.sha256(data).hexdigest(),
    )
    assert requests.put(grant.url, data=data, headers=grant.headers, timeout=30).status_code == 200
    return grant


def staged_keys(deps: Dependencies) -> set[str]:
    return {o.key for o in deps.store.list_objects("staging/")}


@contextlib.contextmanager
def retry_function_held(stack: LocalStack) -> Iterator[None]:
    """The local register function stops draining its retry queue (records stay on it)."""
    old = next(t for t in stack._threads if t.name == "register-retry")
    old.stop()
    old.join(timeout=10)
    try:
        yield
    finally:
        fresh = type(old)(
            old.name,
            old.queue,
            old.handler,
            batch_size=old.batch_size,
            window_seconds=old.window,
            retry_visibility_seconds=old.retry_visibility,
            region=old.region,
            queue_arn=old.queue_arn,
        )
        fresh.start()
        stack._threads[stack._threads.index(old)] = fresh


def take_records(deps: Dependencies) -> list[ReceivedMessage]:
    """Take every record off the register-retry queue, as its DLQ does once the queue gives up."""
    assert deps.register_retry is not None
    taken: list[ReceivedMessage] = []
    while got := deps.register_retry.receive(10):
        for m in got:
            deps.register_retry.delete(m.receipt_handle)
        taken.extend(got)
    return taken


def retry_event(body: str, message_id: str = "a1b2c3d4-0000-4e5f-8a9b-0c1d2e3f4a5b") -> dict[str, Any]:
    """The sample register-retry record (events/), carrying ``body``."""
    event = copy.deepcopy(load_event("sqs_register_retry.json"))
    event["Records"][0].update(body=body, messageId=message_id)
    return event


def min_age_zero(deps: Dependencies) -> None:
    use_dependencies(replace(deps, settings=deps.settings.model_copy(update={"staging_min_age_seconds": 0})))


def test_a_presigned_upload_is_registered_by_its_s3_event_on_the_local_stack(deps: Dependencies) -> None:
    # Given a presigned upload
    owner, dataset, data = uuid4(), uuid4(), parquet(7, seed=1)
    grant = presigned_put(deps, owner, dataset, data)
    # When the object lands, Then S3's notification registers it and staging/ is emptied
    wait_for(lambda: grant.key not in staged_keys(deps), timeout=30)
    ds = deps.catalog.get_dataset(dataset)
    assert (ds.live_fragments, ds.live_rows, ds.compaction_needed) == (1, 7, True)


def test_an_upload_whose_event_failed_with_the_catalog_down_is_registered_by_the_scheduled_run_once(
    stack: LocalStack, deps: Dependencies
) -> None:
    # Given the catalog down while a presigned upload lands: the event's invocation and Lambda's two
    # retries fail, and the record sent to the register-retry queue is never registered either (the
    # queue gave up after its day: the record moved to its DLQ)
    owner, dataset, data = uuid4(), uuid4(), parquet(9, seed=2)
    CatalogDown.calls = 0
    with retry_function_held(stack):
        use_dependencies(replace(deps, catalog=Catalog(CatalogDown())))
        grant = presigned_put(deps, owner, dataset, data)
        [record] = wait_for(lambda: take_records(deps), timeout=30)
        body = json.loads(record.body)
        assert body["requestContext"]["condition"] == "RetriesExhausted"
        assert body["requestContext"]["approximateInvokeCount"] == 3 and CatalogDown.calls >= 3
    # When the catalog is back, Then nothing registers the upload by itself: it waits in staging/
    use_dependencies(deps)
    time.sleep(1.0)
    assert grant.key in staged_keys(deps)
    with pytest.raises(CatalogNotFound):
        deps.catalog.get_dataset(dataset)
    # When the scheduled run comes (the upload is older than its minimum age)
    min_age_zero(deps)
    report = stack.run_scheduled()
    use_dependencies(deps)
    assert report["strandedUploadsResent"] == 1
    # Then the register function registers it once, with its rows, and staging/ is emptied
    wait_for(lambda: not [k for k in staged_keys(deps) if k.startswith(f"staging/{dataset}/")], timeout=30)
    ds = deps.catalog.get_dataset(dataset)
    assert (ds.live_fragments, ds.live_rows) == (1, 9)
    # When the next scheduled run comes, and the lost record is moved back from the retry queue's DLQ
    min_age_zero(deps)
    assert stack.run_scheduled()["strandedUploadsResent"] == 0
    use_dependencies(deps)
    outcome = register.handler(retry_event(record.body), LocalContext(function_name="register"))
    # Then it is still counted once, and nothing was recorded as rejected
    assert outcome == {"batchItemFailures": []}
    ds = deps.catalog.get_dataset(dataset)
    assert (ds.live_fragments, ds.live_rows) == (1, 9)
    assert not [f for f in deps.catalog.list_recent_failures(50) if f.dataset_id == dataset]


def test_an_upload_younger_than_the_minimum_age_is_left_to_its_event(stack: LocalStack, deps: Dependencies) -> None:
    # Given a staged upload that has just landed, its event not handled yet
    with retry_function_held(stack):
        use_dependencies(replace(deps, catalog=Catalog(CatalogDown())))
        grant = presigned_put(deps, uuid4(), uuid4(), parquet(3, seed=3))
        use_dependencies(deps)
        # When the sweep runs with the deployed minimum age (an hour)
        report = resend_stranded_uploads(deps, min_age=timedelta(hours=1))
        # Then it is left alone
        assert grant.key in staged_keys(deps)
        assert grant.key not in report.resent and report.left_young >= 1
    # (and its retry record, once the register function drains its queue again, registers it)
    wait_for(lambda: grant.key not in staged_keys(deps), timeout=30)


def test_the_sweeps_record_and_a_late_retry_racing_register_one_fragment(stack: LocalStack, deps: Dependencies) -> None:
    barrier = threading.Barrier(2)

    def deliver(event: dict[str, Any]) -> Any:
        barrier.wait()
        return register.handler(event, LocalContext(function_name="register"))

    with retry_function_held(stack):
        # Given an upload still staged (its event failed with the catalog down) and two deliveries of
        # it: the failed invocation's record, late, and the scheduled run's
        use_dependencies(replace(deps, catalog=Catalog(CatalogDown())))
        owner, dataset, data = uuid4(), uuid4(), parquet(5, seed=4)
        grant = presigned_put(deps, owner, dataset, data)
        late = wait_for(lambda: take_records(deps), timeout=30)[0].body
        use_dependencies(deps)
        info = next(o for o in deps.store.list_objects("staging/") if o.key == grant.key)
        sweep = stranded_upload_record(deps.store.bucket, deps.settings.region, info, now=datetime.now(UTC))
        # When both are delivered at once
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(deliver, [retry_event(late, "m-late"), retry_event(sweep, "m-sweep")]))
    # Then both succeed, the upload is one fragment, and nothing was recorded as rejected
    assert results == [{"batchItemFailures": []}] * 2
    assert grant.key not in staged_keys(deps)
    ds = deps.catalog.get_dataset(dataset)
    assert (ds.live_fragments, ds.live_rows) == (1, 5)
    assert not [f for f in deps.catalog.list_recent_failures(50) if f.dataset_id == dataset]
