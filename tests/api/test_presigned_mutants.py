"""logic/presigned.py: what mutation testing (make mutate MODULE=logic.presigned) found untested.

The ticket ``upload-url`` writes (where, in which format, when it expires) and the URL's own
expiry; the register handler's outcomes in full (ignored, gone, registered, duplicate), the exact
reasons of a rejection, what it records (once per key) and logs, and its metrics; the size limit
at its boundary and the caller's upload limits; a realtime compaction enqueued at each multiple of
the threshold only; an upload handled by another delivery while this one reads it; and the
stranded-upload sweep: its record as Lambda writes one, its minimum age at the boundary, batches,
cap, and what it logs and counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.handlers import register
from fusou_compaction.handlers.deps import Dependencies, use_dependencies
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.logic.presigned import (
    issue_presigned_upload,
    maybe_enqueue_realtime,
    register_staged_upload,
    resend_stranded_uploads,
    stranded_upload_record,
)
from fusou_compaction.logic.redrive import redrive_all
from fusou_compaction.logic.uploads import store_fragment
from fusou_compaction.observability import metrics
from fusou_compaction.ports.messaging import BatchEntry, BatchSendResult
from fusou_compaction.ports.object_store import ObjectInfo

from ..conftest import load_event
from .conftest import Api, log_records, parquet_bytes
from .test_presigned import ask_url, put_presigned, s3_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

TABLE = "battles"


# -- helpers ---------------------------------------------------------------------------------


def presigned(api: Api, dataset: UUID, data: bytes, *, user: UUID | None = None) -> dict[str, Any]:
    """upload-url, then the client's PUT of ``data``: the grant."""
    response = ask_url(api, dataset, data, user=user)
    assert response["statusCode"] == 201, response
    grant: dict[str, Any] = json.loads(response["body"])
    assert put_presigned(grant, data).status_code == 200
    return grant


def notify(api: Api, key: str) -> dict[str, Any]:
    """S3's notification for ``key`` reaches the register handler: its one outcome."""
    [outcome] = register.handler(s3_event(api, key), LocalContext(function_name="register"))["results"]
    return outcome  # type: ignore[no-any-return]


def ticket_of(api: Api, key: str) -> dict[str, Any]:
    return json.loads(api.deps.store.get_bytes(key.removesuffix(".parquet") + ".ticket.json"))  # type: ignore[no-any-return]


def emitted_metrics(out: str) -> dict[str, tuple[Any, Any]]:
    """The metrics of Powertools' EMF lines in ``out``: name -> (unit, values)."""
    found: dict[str, tuple[Any, Any]] = {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            for m in directive["Metrics"]:
                value = doc[m["Name"]]
                found[m["Name"]] = (m.get("Unit"), value if isinstance(value, list) else [value])
    return found


def messages(api: Api) -> list[dict[str, Any]]:
    return api.drain()


# -- the ticket and the signed PUT -------------------------------------------------------------


def test_the_ticket_lies_beside_the_upload_in_camel_case_and_expires_with_the_url(api: Api) -> None:
    # Given a clock and a grant valid for a minute
    owner, dataset, data = uuid4(), uuid4(), parquet_bytes(4)
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    grant = issue_presigned_upload(
        api.deps.store,
        owner_id=owner,
        dataset_id=dataset,
        table=TABLE,
        size_bytes=len(data),
        sha256_hex=hashlib.sha256(data).hexdigest(),
        expires_in=60,
        now=now,
    )
    upload = grant.ticket.upload_id
    # Then the ticket is the staging key's ".ticket.json" twin (the bucket notification filters on
    # ".parquet", so it never triggers the register function), a JSON object in camelCase
    assert grant.key == f"staging/{dataset}/{TABLE}/{upload}.parquet"
    ticket_key = f"staging/{dataset}/{TABLE}/{upload}.ticket.json"
    assert json.loads(api.deps.store.get_bytes(ticket_key)) == {
        "uploadId": str(upload),
        "ownerId": str(owner),
        "datasetId": str(dataset),
        "table": TABLE,
        "sizeBytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "expiresAt": "2026-03-01T12:01:00Z",
    }
    assert api.s3.head_object(Bucket=api.deps.store.bucket, Key=ticket_key)["ContentType"] == "application/json"
    # And it expires when the URL does, a minute after it was issued, and the grant is a PUT
    assert grant.ticket.expires_at == now + timedelta(seconds=60)
    assert parse_qs(urlsplit(grant.url).query)["X-Amz-Expires"] == ["60"]
    assert grant.method == "PUT"


def test_upload_url_expires_in_fifteen_minutes_on_a_utc_clock(api: Api) -> None:
    # Given upload-url's default expiry, When a grant is asked for
    before = datetime.now(UTC)
    response = ask_url(api, uuid4(), b"x" * 10)
    after = datetime.now(UTC)
    grant = json.loads(response["body"])
    # Then expiresAt is an instant (with its zone), 900 s after the request, as the URL says
    expires = datetime.fromisoformat(grant["expiresAt"])
    assert expires.tzinfo is not None
    assert before + timedelta(seconds=900) <= expires <= after + timedelta(seconds=900)
    assert parse_qs(urlsplit(grant["url"]).query)["X-Amz-Expires"] == ["900"]


# -- the register handler's outcomes -----------------------------------------------------------


def test_a_key_outside_staging_is_ignored_with_its_reason(api: Api) -> None:
    assert notify(api, "datasets/x/y.parquet") == {
        "key": "datasets/x/y.parquet",
        "status": "ignored",
        "reason": "not a staging key",
        "fragment": None,
    }


def test_a_registered_upload_reports_its_fragment_counts_once_and_is_gone_after(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a presigned upload that landed
    dataset, data = uuid4(), parquet_bytes(5, seed=21)
    grant = presigned(api, dataset, data)
    capsys.readouterr()
    # When its event is handled
    outcome = notify(api, grant["key"])
    # Then the outcome names the key and the fragment
    fragment = outcome.pop("fragment")
    assert outcome == {"key": grant["key"], "status": "registered", "reason": None}
    assert fragment["datasetId"] == str(dataset) and fragment["rowCount"] == 5 and fragment["duplicate"] is False
    assert fragment["sha256"] == hashlib.sha256(data).hexdigest()
    # And one FragmentsUploaded is counted (no InvalidUploads)
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted.get("FragmentsUploaded") == ("Count", [1.0])
    assert "InvalidUploads" not in emitted
    # When the event is delivered again, Then the upload is gone, under its key
    assert notify(api, grant["key"]) == {"key": grant["key"], "status": "gone", "reason": None, "fragment": None}


def test_bytes_the_dataset_already_has_are_a_duplicate(api: Api) -> None:
    # Given a fragment uploaded directly
    dataset, data = uuid4(), parquet_bytes(3, seed=22)
    api.upload(api.alice, dataset, data)
    # When the same bytes arrive by a presigned upload
    grant = presigned(api, dataset, data)
    outcome = notify(api, grant["key"])
    # Then they are the same fragment, reported a duplicate, and staging/ is emptied
    assert (outcome["status"], outcome["fragment"]["duplicate"]) == ("duplicate", True)
    assert api.deps.catalog.get_dataset(dataset).live_fragments == 1
    assert list(api.deps.store.list_objects("staging/")) == []


def test_an_upload_exactly_at_the_presigned_limit_is_registered(api: Api) -> None:
    data = parquet_bytes(4, seed=23)
    api = api.with_settings(max_presigned_upload_bytes=len(data))
    grant = presigned(api, uuid4(), data)
    assert notify(api, grant["key"])["status"] == "registered"


def test_an_upload_over_a_limit_lowered_since_its_grant_is_rejected(api: Api) -> None:
    # Given a grant for n bytes, When the limit is lowered below n before the object lands
    dataset, data = uuid4(), parquet_bytes(4, seed=24)
    grant = presigned(api, dataset, data)
    api = api.with_settings(max_presigned_upload_bytes=len(data) - 1)
    # Then the object is rejected though it is the declared size, and removed
    assert notify(api, grant["key"])["status"] == "rejected"
    assert list(api.deps.store.list_objects("staging/")) == []


def test_the_upload_limits_of_the_settings_apply_to_presigned_uploads(api: Api) -> None:
    # Given settings allowing one column, When a two-column file lands
    api = api.with_settings(upload_max_columns=1)
    grant = presigned(api, uuid4(), parquet_bytes(3, seed=25))
    # Then it is rejected for its columns
    outcome = notify(api, grant["key"])
    assert outcome["status"] == "rejected" and "column" in outcome["reason"], outcome


# -- rejections: the reasons, the record, the log and the metric --------------------------------


def test_an_object_of_another_size_than_declared_is_rejected_with_both_sizes(api: Api) -> None:
    dataset, data = uuid4(), parquet_bytes(3, seed=26)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    # Written around the presigned URL (which binds the length): one byte more
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=grant["key"], Body=data + b"\0")
    assert notify(api, grant["key"])["reason"] == f"size {len(data) + 1} is not the declared {len(data)}"


def test_an_object_of_other_bytes_is_rejected_for_its_checksum(api: Api) -> None:
    dataset, data = uuid4(), parquet_bytes(3, seed=27)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=grant["key"], Body=b"x" * len(data))
    assert notify(api, grant["key"])["reason"] == "SHA-256 differs from the declared one"


def test_a_ticket_for_another_upload_is_rejected(api: Api) -> None:
    # Given the ticket of one upload copied beside another staging key, and an object there
    dataset, data = uuid4(), parquet_bytes(3, seed=28)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    other = keys.staging_key(dataset, TABLE, uuid4())
    api.deps.store.put(
        other.removesuffix(".parquet") + ".ticket.json", json.dumps(ticket_of(api, grant["key"])).encode()
    )
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=other, Body=data)
    # When its event arrives, Then it is rejected: the ticket is not that key's
    assert notify(api, other)["reason"] == "ticket does not match the key"
    assert not api.deps.store.exists(other)


def test_a_rejection_without_a_ticket_is_recorded_once_per_key_logged_and_counted(
    api: Api, logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an object under staging/ that no upload-url issued
    dataset = uuid4()
    key = keys.staging_key(dataset, TABLE, uuid4())
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=key, Body=parquet_bytes())
    capsys.readouterr()
    # When its event arrives
    assert notify(api, key)["status"] == "rejected"
    # Then one InvalidUploads is counted
    assert emitted_metrics(capsys.readouterr().out).get("InvalidUploads") == ("Count", [1.0])
    # And the failure is recorded under the key, with the key as its body (there is no ticket)
    [failure] = api.deps.catalog.list_recent_failures(10)
    assert (failure.source, failure.message_id, failure.dataset_id, failure.error_step, failure.error) == (
        "workflow",
        f"register:{key}",
        dataset,
        "RegisterUpload",
        "upload rejected: no valid upload ticket",
    )
    assert failure.body is not None and json.loads(failure.body) == {"key": key}
    # And a warning names the key and the reason
    rejected = [r for r in log_records(logs) if r.get("message") == "presigned upload rejected"]
    assert [(r["level"], r.get("key"), r.get("reason")) for r in rejected] == [
        ("WARNING", key, "no valid upload ticket")
    ]
    # When the same key is rejected again (put again, its event delivered again)
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=key, Body=parquet_bytes())
    assert notify(api, key)["status"] == "rejected"
    # Then it is still one failure
    assert len(api.deps.catalog.list_recent_failures(10)) == 1


def test_a_rejection_after_the_ticket_was_read_records_the_ticket(api: Api) -> None:
    # Given a presigned upload of bytes that are not Parquet
    dataset, data = uuid4(), b"definitely not parquet" * 10
    grant = presigned(api, dataset, data)
    ticket = ticket_of(api, grant["key"])
    # When its event arrives, Then it is rejected and the failure's body is its ticket, as written
    assert notify(api, grant["key"])["status"] == "rejected"
    [failure] = api.deps.catalog.list_recent_failures(10)
    assert failure.body is not None and json.loads(failure.body) == ticket
    assert set(ticket) == {"uploadId", "ownerId", "datasetId", "table", "sizeBytes", "sha256", "expiresAt"}


def test_rejections_are_permanent_so_the_redrive_leaves_them(api: Api) -> None:
    # Given two rejected presigned uploads (no ticket; bytes that are no Parquet), recorded with their
    # dataset and a body (the key, the ticket)
    dataset = uuid4()
    key = keys.staging_key(dataset, TABLE, uuid4())
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=key, Body=parquet_bytes())
    assert notify(api, key)["status"] == "rejected"
    grant = presigned(api, dataset, b"definitely not parquet" * 10)
    assert notify(api, grant["key"])["status"] == "rejected"
    assert len(api.deps.catalog.list_recent_failures(10)) == 2
    # When the operator redrives (dlq-redrive), Then neither goes to the compaction queue: a key is
    # no compaction message, and a ticket would parse as a manual run of the rejected upload's
    # dataset, whose object is already deleted (migration 0012)
    report = redrive_all(api.deps.dlq, api.deps.queue, api.deps.catalog, max_messages=10)
    assert (report.moved, report.from_records, report.failed) == (0, 0, 0)
    assert api.deps.catalog.list_redrivable_failures(10) == []


# -- another delivery handles the upload while this one reads it -------------------------------


class HandledMeanwhile:
    """The bucket as another delivery leaves it: when ``key`` is read, the upload and its ticket
    were just removed (registered or rejected by the other delivery)."""

    def __init__(self, deps: Dependencies, upload: str, key: str) -> None:
        self._inner, self._upload, self._key = deps.store, upload, key

    def get_bytes(self, key: str) -> bytes:
        if key == self._key:
            self._inner.delete_many([self._upload, self._upload.removesuffix(".parquet") + ".ticket.json"])
        return self._inner.get_bytes(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("read", ["ticket", "upload"])
def test_an_upload_handled_by_another_delivery_while_read_is_gone_not_rejected(api: Api, read: str) -> None:
    # Given a presigned upload that landed
    dataset, data = uuid4(), parquet_bytes(3, seed=29)
    grant = presigned(api, dataset, data)
    key = grant["key"]
    read_key = key.removesuffix(".parquet") + ".ticket.json" if read == "ticket" else key
    deps = replace(api.deps, store=HandledMeanwhile(api.deps, key, read_key))  # type: ignore[arg-type]
    # When another delivery removes it just as this one reads its ticket (or its bytes)
    outcome = register_staged_upload(deps, key)
    # Then this one finds it gone: nothing rejected, nothing recorded
    assert outcome.to_json_dict() == {"key": key, "status": "gone", "reason": None, "fragment": None}
    assert api.deps.catalog.list_recent_failures(10) == []


# -- realtime compaction -----------------------------------------------------------------------


def test_a_realtime_compaction_is_enqueued_at_each_multiple_of_the_threshold_only(api: Api, logs: io.StringIO) -> None:
    # Given a realtime threshold of two fragments
    api = api.with_settings(realtime_fragment_threshold=2)
    dataset = uuid4()
    seen: list[int] = []

    def land(data: bytes) -> None:
        assert notify(api, presigned(api, dataset, data)["key"])["status"] in {"registered", "duplicate"}
        seen.append(len(messages(api)))

    # When fragments land one by one: 1, 2, the second's bytes again (a duplicate), 3, 4
    second = parquet_bytes(3, seed=31)
    for data in (parquet_bytes(3, seed=30), second, second, parquet_bytes(3, seed=32), parquet_bytes(3, seed=33)):
        land(data)
    # Then a compaction is enqueued at 2 and at 4 live fragments, and never for the duplicate
    assert seen == [0, 1, 0, 0, 1]
    enqueued = [r for r in log_records(logs) if r.get("message") == "realtime compaction enqueued"]
    assert [(r.get("datasetId"), r.get("fragments")) for r in enqueued] == [(str(dataset), 2), (str(dataset), 4)]


def test_the_realtime_message_is_a_realtime_compaction_of_the_dataset(api: Api) -> None:
    # Given a threshold of one, When a fragment is uploaded
    api = api.with_settings(realtime_fragment_threshold=1)
    dataset = uuid4()
    stored = store_fragment(
        api.deps.catalog, api.deps.store, owner_id=api.alice, dataset_id=dataset, table=TABLE, data=parquet_bytes()
    )
    message_id = maybe_enqueue_realtime(api.deps.catalog, api.deps.queue, api.settings, stored)
    # Then one message asks for a realtime compaction of that dataset, and its id is returned
    got = api.sqs.receive_message(QueueUrl=api.deps.queue.url, MaxNumberOfMessages=10)["Messages"]
    assert [m["MessageId"] for m in got] == [message_id]
    body = json.loads(got[0]["Body"])
    assert (body["datasetId"], body["priority"]) == (str(dataset), "realtime")
    assert set(body) == {"datasetId", "triggeredAt", "priority"}


def test_without_a_threshold_nothing_is_enqueued_nor_warned(api: Api, logs: io.StringIO) -> None:
    # Given the default threshold (0: never), When a fragment is uploaded
    api.upload(api.alice, uuid4(), parquet_bytes())
    # Then nothing is enqueued, and nothing failed
    assert messages(api) == []
    assert [r for r in log_records(logs) if r.get("level") == "WARNING"] == []


def test_a_failed_realtime_send_keeps_the_upload_and_is_logged_with_its_error(api: Api, logs: io.StringIO) -> None:
    # Given a threshold of one and a queue that does not exist
    api = api.with_settings(realtime_fragment_threshold=1)
    missing = SqsQueue(api.sqs, api.deps.queue.url + "-missing")
    use_dependencies(replace(api.deps, queue=missing))
    dataset = uuid4()
    # When a fragment is uploaded, Then it is stored all the same
    api.upload(api.alice, dataset, parquet_bytes())
    assert api.deps.catalog.get_dataset(dataset).live_fragments == 1
    # And a warning names the dataset and carries the error
    [failed] = [r for r in log_records(logs) if r.get("message") == "realtime enqueue failed"]
    assert (failed["level"], failed.get("datasetId")) == ("WARNING", str(dataset))
    assert failed.get("exception_name"), failed


def test_realtime_enqueue_is_off_for_a_threshold_of_zero_only(api: Api) -> None:
    # Given a threshold of one (the smallest that enqueues)
    api = api.with_settings(realtime_fragment_threshold=1)
    dataset = uuid4()
    # When the first fragment arrives by a presigned upload, Then a compaction is enqueued
    assert notify(api, presigned(api, dataset, parquet_bytes(2, seed=34))["key"])["status"] == "registered"
    assert [m["datasetId"] for m in messages(api)] == [str(dataset)]


# -- the stranded-upload sweep -----------------------------------------------------------------


@pytest.fixture
def sweep(api: Api) -> Iterator[Dependencies]:
    """The API's dependencies with a register-retry queue, as the scheduled function has them."""
    url = api.sqs.create_queue(QueueName=f"register-retry-{uuid4().hex[:12]}")["QueueUrl"]
    yield replace(api.deps, register_retry=SqsQueue(api.sqs, url))
    api.sqs.delete_queue(QueueUrl=url)


def stage(deps: Dependencies, dataset: UUID | None = None) -> str:
    key = keys.staging_key(dataset or uuid4(), TABLE, uuid4())
    deps.store.put(key, b"PAR1")
    return key


def retry_bodies(deps: Dependencies) -> list[dict[str, Any]]:
    assert deps.register_retry is not None
    out: list[dict[str, Any]] = []
    while got := deps.register_retry.receive(10):
        for m in got:
            deps.register_retry.delete(m.receipt_handle)
            out.append(json.loads(m.body))
    return out


LATER = timedelta(days=1)


def test_the_sweep_needs_the_register_retry_queue(api: Api) -> None:
    with pytest.raises(RuntimeError) as raised:
        resend_stranded_uploads(api.deps, min_age=timedelta(hours=1))
    assert str(raised.value) == "no register-retry queue is configured (FUSOU_REGISTER_RETRY_QUEUE_URL)"


def test_the_sweep_resends_every_upload_once_in_batches_of_ten(
    sweep: Dependencies, logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 12 stranded uploads (two batches, the second of two)
    staged = sorted(stage(sweep) for _ in range(12))
    metrics.clear_metrics()
    capsys.readouterr()
    # When the sweep runs a day later
    report = resend_stranded_uploads(sweep, min_age=timedelta(hours=1), now=datetime.now(UTC) + LATER)
    metrics.flush_metrics()
    # Then each is resent once, and its record is on the register-retry queue
    assert sorted(report.resent) == staged and len(report.resent) == 12
    assert (report.left_young, report.errors) == (0, [])
    keys_sent = [b["requestPayload"]["Records"][0]["s3"]["object"]["key"] for b in retry_bodies(sweep)]
    assert sorted(keys_sent) == staged
    # And they are counted, and logged by key
    assert emitted_metrics(capsys.readouterr().out).get("StrandedUploadsResent") == ("Count", [12.0])
    [logged] = [r for r in log_records(logs) if r.get("level") == "WARNING"]
    assert logged["message"] == "presigned uploads whose S3 event was lost were sent to the register function again"
    assert logged.get("keys") == report.resent


def test_the_sweep_skips_tickets_and_goes_on_past_them(sweep: Dependencies) -> None:
    # Given an upload whose ticket is listed before another upload
    first = stage(sweep, UUID(int=0))
    sweep.store.put(first.removesuffix(".parquet") + ".ticket.json", b"{}")
    last = stage(sweep, UUID(int=(1 << 128) - 1))
    # When the sweep runs, Then both uploads are resent, and the ticket is not
    report = resend_stranded_uploads(sweep, min_age=timedelta(hours=1), now=datetime.now(UTC) + LATER)
    assert report.resent == [first, last]


def test_an_upload_exactly_the_minimum_age_old_is_resent_and_younger_ones_are_counted(sweep: Dependencies) -> None:
    # Given one staged upload
    key = stage(sweep)
    [info] = sweep.store.list_objects("staging/")
    # When the sweep runs exactly the minimum age after it landed, Then it is resent
    exact = resend_stranded_uploads(sweep, min_age=timedelta(hours=1), now=info.last_modified + timedelta(hours=1))
    assert (exact.resent, exact.left_young) == ([key], 0)
    # Given two more, When the sweep runs before any of the three is an hour old
    for _ in range(2):
        stage(sweep)
    young = resend_stranded_uploads(sweep, min_age=timedelta(hours=1), now=info.last_modified)
    # Then none is resent, and all three are counted as left to their event
    assert (young.resent, young.left_young) == ([], 3)


def test_the_sweep_resends_at_most_max_objects(sweep: Dependencies) -> None:
    for _ in range(3):
        stage(sweep)
    report = resend_stranded_uploads(sweep, min_age=timedelta(0), now=datetime.now(UTC) + LATER, max_objects=2)
    assert len(report.resent) == 2


class Listed:
    """A bucket whose staging/ lists ``infos`` (the sweep reads nothing else of it)."""

    bucket = "listed"

    def __init__(self, infos: list[ObjectInfo]) -> None:
        self.infos = infos

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return iter(self.infos)


class Recording:
    """A register-retry queue that takes every batch."""

    def __init__(self) -> None:
        self.batches: list[list[BatchEntry]] = []

    def send_batch(self, entries: list[BatchEntry]) -> BatchSendResult:
        self.batches.append(entries)
        return BatchSendResult(sent=[e.id for e in entries], failed={})


def test_the_sweep_resends_at_most_a_thousand_uploads_a_run_by_default(api: Api) -> None:
    # Given 1,001 stranded uploads
    landed = datetime(2026, 1, 1, tzinfo=UTC)
    infos = [ObjectInfo(keys.staging_key(uuid4(), TABLE, uuid4()), 4, landed) for _ in range(1001)]
    queue = Recording()
    deps = replace(api.deps, store=Listed(infos), register_retry=queue)  # type: ignore[arg-type]
    # When the sweep runs with its defaults
    report = resend_stranded_uploads(deps, min_age=timedelta(hours=1), now=landed + LATER)
    # Then it resends the first thousand (the next run takes the rest), in batches of ten
    assert report.resent == [i.key for i in infos[:1000]]
    assert [len(b) for b in queue.batches] == [10] * 100


# -- the sweep's record: what Lambda's on-failure destination would have received ----------------


@pytest.fixture
def machine_clock_in_tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC+9 (a developer's laptop running the local stack)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def keys_of(doc: Any, path: str = "") -> set[str]:
    """Every key path of a JSON document (lists by their first item)."""
    if isinstance(doc, dict):
        return {f"{path}/{k}" for k in doc} | {p for k, v in doc.items() for p in keys_of(v, f"{path}/{k}")}
    if isinstance(doc, list) and doc:
        return keys_of(doc[0], f"{path}[]")
    return set()


def the_record(etag: str | None = '"d41d8cd98f00b204e9800998ecf8427e"') -> dict[str, Any]:
    tokyo = timezone(timedelta(hours=9))
    info = ObjectInfo(
        key="staging/5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a10/battles/0b5e4c1a-8d2f-4e7b-9c3a-1f6d2e8b7a45.parquet",
        size=52428800,
        last_modified=datetime(2025, 12, 17, 9, 0, 5, 123456, tzinfo=tokyo),  # 00:00:05.123456 UTC
        etag=etag,
    )
    now = datetime(2025, 12, 17, 10, 2, 11, 23456, tzinfo=tokyo)  # 3,725.9 s later
    return json.loads(stranded_upload_record("dev-kc-compaction-data", "us-east-1", info, now=now))  # type: ignore[no-any-return]


def test_the_sweeps_record_has_only_fields_lambda_and_s3_write_where_they_write_them() -> None:
    # Given Lambda's on-failure record of a failed S3 event (events/), When the sweep writes one
    lambdas = json.loads(load_event("sqs_register_retry.json")["Records"][0]["body"])
    # Then every field of the sweep's is one of Lambda's, at the same place
    assert keys_of(the_record()) <= keys_of(lambdas)
    assert keys_of(the_record())


def test_the_sweeps_record_is_the_uploads_s3_event_in_utc_marked_as_the_sweeps(machine_clock_in_tokyo: None) -> None:
    record = the_record()
    # A Lambda record's request id is a UUID, new for each record
    assert UUID(record["requestContext"].pop("requestId")) != UUID(the_record()["requestContext"]["requestId"])
    assert record == {
        "version": "1.0",
        "timestamp": "2025-12-17T01:02:11.023456+00:00",
        "requestContext": {"condition": "StrandedUpload", "approximateInvokeCount": 0},
        "requestPayload": {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2025-12-17T00:00:05.123Z",
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "fusou-compaction:scheduled"},
                    "requestParameters": {"sourceIPAddress": "s3.amazonaws.com"},
                    "responseElements": {"x-amz-request-id": "stranded-upload", "x-amz-id-2": "stranded-upload"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "stranded-upload-sweep",
                        "bucket": {
                            "name": "dev-kc-compaction-data",
                            "ownerIdentity": {"principalId": "fusou-compaction"},
                            "arn": "arn:aws:s3:::dev-kc-compaction-data",
                        },
                        "object": {
                            "key": "staging/5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a10/battles/"
                            "0b5e4c1a-8d2f-4e7b-9c3a-1f6d2e8b7a45.parquet",
                            "size": 52428800,
                            "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        },
                    },
                }
            ]
        },
        "responsePayload": {
            "errorType": "StrandedUpload",
            "errorMessage": "still in staging/ 3725 s after it landed: its S3 event was never registered",
        },
    }


def test_an_object_without_an_etag_has_an_empty_one_in_the_record() -> None:
    assert the_record(etag=None)["requestPayload"]["Records"][0]["s3"]["object"]["eTag"] == ""
