"""S3ObjectStore against moto's server over HTTP (the same wire protocol boto3 uses on AWS)."""

from __future__ import annotations

import base64
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from botocore.exceptions import ClientError

from fusou_compaction.adapters.s3 import (
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    S3ObjectStore,
)
from fusou_compaction.local.aws import LocalAws

DATA = bytes(range(256)) * 4  # 1,024 distinct-position bytes


@pytest.fixture
def store(local_aws: LocalAws, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(bucket, region=local_aws.region, endpoint_url=local_aws.endpoint_url)


class Spy:
    """Forwards to a real client; lets a test observe or replace single operations."""

    def __init__(self, real: Any, **overrides: Any) -> None:
        self._real = real
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            override = self._overrides[name]

            def call(**kwargs: Any) -> Any:
                self.calls.append((name, kwargs))
                return override(self._real, **kwargs)

            return call
        return getattr(self._real, name)


def client_error(code: str, status: int, op: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def put_many(store: S3ObjectStore, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))


# -- conditional writes ---------------------------------------------------------------------------


def test_put_if_absent_creates_once_then_refuses_and_keeps_the_first_body(store: S3ObjectStore) -> None:
    # Given an empty key
    key = "datasets/d/t/fragments/abc.parquet"
    # When two conditional writes race for it, one after the other
    first = store.put_if_absent(key, b"first", content_type="application/vnd.apache.parquet")
    second = store.put_if_absent(key, b"second")
    # Then only the first created it, and its body survived
    assert (first, second) == (True, False)
    assert store.get_bytes(key) == b"first"
    assert store.client.head_object(Bucket=store.bucket, Key=key)["ContentType"] == "application/vnd.apache.parquet"


def test_put_if_absent_retries_a_409_conflict_then_reports_the_outcome(store: S3ObjectStore) -> None:
    # Given S3 answers 409 (a concurrent conditional write in flight) twice, then 412
    answers = [client_error("ConditionalRequestConflict", 409), client_error("ConditionalRequestConflict", 409)]

    def put_object(real: Any, **kwargs: Any) -> Any:
        if answers:
            raise answers.pop(0)
        return real.put_object(**kwargs)

    spy = Spy(store.client, put_object=put_object)
    flaky = S3ObjectStore(store.bucket, client=spy)
    store.put("k", b"winner")
    # When we put conditionally
    created = flaky.put_if_absent("k", b"loser")
    # Then it retried past the conflicts, got the real 412 and said "not created"
    assert created is False
    assert len(spy.calls) == 3
    assert all(c[1]["IfNoneMatch"] == "*" for c in spy.calls)
    assert store.get_bytes("k") == b"winner"


def test_put_if_absent_raises_on_errors_other_than_a_precondition(store: S3ObjectStore) -> None:
    # Given S3 refuses the write for a reason that is not "already exists"
    def put_object(real: Any, **kwargs: Any) -> Any:
        raise client_error("AccessDenied", 403)

    broken = S3ObjectStore(store.bucket, client=Spy(store.client, put_object=put_object))
    # When / Then the failure surfaces as a store error, never as "False"
    with pytest.raises(ObjectStoreError) as info:
        broken.put_if_absent("k", b"x")
    assert not isinstance(info.value, PreconditionFailed | ObjectNotFound)


# -- reads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(None, None, DATA, id="whole"),
        pytest.param(0, 3, DATA[0:4], id="first-bytes-end-inclusive"),
        pytest.param(None, 9, DATA[0:10], id="only-end"),
        pytest.param(100, 199, DATA[100:200], id="middle"),
        pytest.param(1000, None, DATA[1000:], id="open-ended"),
        pytest.param(-8, None, DATA[-8:], id="suffix-like-a-parquet-footer"),
        pytest.param(-5000, None, DATA, id="suffix-longer-than-object"),
        pytest.param(1020, 5000, DATA[1020:], id="end-past-size"),
        pytest.param(5000, None, b"", id="start-past-size-is-empty-like-slicing"),
    ],
)
def test_get_bytes_reads_inclusive_ranges_like_slicing(
    store: S3ObjectStore, start: int | None, end: int | None, expected: bytes
) -> None:
    # Given a 1 KiB object whose every byte position is recognisable
    store.put("blob", DATA)
    # When we read a range
    got = store.get_bytes("blob", start=start, end=end)
    # Then it is data[start:end + 1] (or data[start:] for a negative start)
    assert got == expected


@pytest.mark.parametrize(("start", "end"), [(5, 4), (-8, 10), (0, -1)])
def test_get_bytes_rejects_ranges_that_mean_nothing(store: S3ObjectStore, start: int, end: int) -> None:
    # Given / When / Then a malformed range fails before any request
    with pytest.raises(ValueError, match="end"):
        store.get_bytes("blob", start=start, end=end)


def test_missing_key_is_object_not_found_for_reads_and_none_for_head(store: S3ObjectStore) -> None:
    # Given a key that was never written
    key = "datasets/nothing/here.parquet"
    # When we read it (whole and ranged)
    # Then a typed ObjectNotFound names the key (also catchable as KeyError)
    with pytest.raises(ObjectNotFound) as info:
        store.get_bytes(key)
    assert info.value.key == key
    assert isinstance(info.value, KeyError)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(key, start=-8)
    # And head / exists answer without raising
    assert store.head(key) is None
    assert store.exists(key) is False


def test_a_missing_bucket_is_a_store_error_not_a_missing_key(local_aws: LocalAws) -> None:
    # Given a store pointed at a bucket that does not exist
    store = S3ObjectStore("no-such-bucket-anywhere", endpoint_url=local_aws.endpoint_url)
    # When we read from it
    # Then it is a configuration failure, not "this object is gone"
    with pytest.raises(ObjectStoreError) as info:
        store.get_bytes("k")
    assert not isinstance(info.value, ObjectNotFound)
    assert "NoSuchBucket" in str(info.value)


def test_head_reports_size_time_and_unquoted_etag(store: S3ObjectStore) -> None:
    # Given an object
    store.put("a/b.bin", DATA)
    # When we head it
    info = store.head("a/b.bin")
    # Then size and etag (the MD5 for a single PUT, without quotes) are right
    assert info is not None
    assert info.key == "a/b.bin"
    assert info.size == len(DATA)
    assert info.etag == hashlib.md5(DATA).hexdigest()  # noqa: S324 - S3's ETag, not security
    assert info.last_modified.tzinfo is not None
    assert store.exists("a/b.bin")


# -- listing and deleting many ------------------------------------------------------------------------


@pytest.fixture
def many_keys(store: S3ObjectStore) -> list[str]:
    keys = [f"many/{i:05d}.bin" for i in range(1050)]
    put_many(store, [*keys, "other/outside-the-prefix.bin", "manyish/not-a-child.bin"])
    return keys


def test_list_objects_pages_past_a_thousand_keys_and_keeps_to_the_prefix(
    store: S3ObjectStore, many_keys: list[str]
) -> None:
    # Given 1,050 objects under a prefix (more than one ListObjectsV2 page) and some outside it
    # When we list the prefix
    listed = list(store.list_objects("many/"))
    # Then every object comes back once, in key order, and nothing else
    assert [o.key for o in listed] == many_keys
    assert all(o.size == 1 for o in listed)


def test_list_objects_follows_continuation_with_small_pages(store: S3ObjectStore) -> None:
    # Given 7 objects
    keys = [f"p/{i}" for i in range(7)]
    put_many(store, keys)
    # When we list with pages of 3 (three requests)
    listed = [o.key for o in store.list_objects("p/", page_size=3)]
    # Then the pages join up without gaps or repeats
    assert listed == keys


def test_delete_many_batches_a_thousand_keys_per_request(store: S3ObjectStore) -> None:
    # Given 1,050 keys to delete; real objects sit at both ends so both batches must reach S3
    # (S3 deletes missing keys quietly, which keeps this test from writing 1,050 objects)
    keys = [f"many/{i:05d}.bin" for i in range(1050)]
    existing = keys[:20] + keys[990:1010] + keys[-20:]
    put_many(store, [*existing, "other/outside.bin"])
    spy = Spy(store.client, delete_objects=lambda real, **kw: real.delete_objects(**kw))
    deleting = S3ObjectStore(store.bucket, client=spy)
    # When we delete them all, naming one key twice
    failed = deleting.delete_many([*keys, keys[0]])
    # Then nothing failed, two quiet requests carried at most 1,000 keys each, and the prefix is empty
    assert failed == []
    sizes = [len(kw["Delete"]["Objects"]) for _, kw in spy.calls]
    assert sizes == [1000, 50]
    assert all(kw["Delete"]["Quiet"] is True for _, kw in spy.calls)
    assert list(store.list_objects("many/")) == []
    assert store.exists("other/outside.bin")


def test_delete_many_returns_the_keys_s3_could_not_delete(store: S3ObjectStore) -> None:
    # Given S3 reports one per-key error in a batch, and fails a second batch outright
    keys = [f"d/{i:04d}" for i in range(1001)]

    def delete_objects(real: Any, **kwargs: Any) -> Any:
        batch = [o["Key"] for o in kwargs["Delete"]["Objects"]]
        if len(batch) == 1:
            raise client_error("InternalError", 500, "DeleteObjects")
        resp = real.delete_objects(**kwargs)
        resp["Errors"] = [{"Key": "d/0007", "Code": "AccessDenied", "Message": "no"}]
        return resp

    flaky = S3ObjectStore(store.bucket, client=Spy(store.client, delete_objects=delete_objects))
    # When we delete them
    failed = flaky.delete_many(keys)
    # Then exactly the refused key and the whole failed batch are reported
    assert sorted(failed) == ["d/0007", "d/1000"]


def test_delete_many_of_nothing_sends_nothing(store: S3ObjectStore) -> None:
    # Given no keys / When we delete / Then no request is made and nothing failed
    spy = Spy(store.client, delete_objects=lambda real, **kw: real.delete_objects(**kw))
    assert S3ObjectStore(store.bucket, client=spy).delete_many([]) == []
    assert spy.calls == []


# -- pyarrow --------------------------------------------------------------------------------------------


def test_filesystem_reads_parquet_written_by_boto3(store: S3ObjectStore, s3_client: Any) -> None:
    # Given a Parquet file uploaded by plain boto3
    table = pa.table({"id": list(range(500)), "name": [f"ship-{i}" for i in range(500)]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3_client.put_object(Bucket=store.bucket, Key="x/f.parquet", Body=buf.getvalue())
    # When pyarrow reads it through the store's filesystem and path
    fs = store.filesystem()
    got = pq.read_table(store.path_for("x/f.parquet"), filesystem=fs)
    # Then it is the same table, and the filesystem is built once per store
    assert got.equals(table)
    assert store.path_for("x/f.parquet") == f"{store.bucket}/x/f.parquet"
    assert store.filesystem() is fs


# -- presigned uploads -------------------------------------------------------------------------------------


def test_presigned_put_signs_length_and_checksum_and_uploads(store: S3ObjectStore) -> None:
    # Given a fragment the client declared (size and SHA-256)
    body = b"PAR1" + bytes(100) + b"PAR1"
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    # When we presign a PUT for it
    signed = store.presign_put("staging/u.parquet", max_bytes=len(body), expires_in=600, checksum_sha256_b64=checksum)
    # Then the signature covers the length and checksum, and the headers to send are exactly those
    query = parse_qs(urlsplit(signed["url"]).query)
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) == {
        "host",
        "content-length",
        "x-amz-checksum-sha256",
    }
    assert query["X-Amz-Expires"] == ["600"]
    assert signed["method"] == "PUT"
    assert signed["headers"] == {"Content-Length": str(len(body)), "x-amz-checksum-sha256": checksum}
    # And a plain HTTP client can upload with it
    resp = requests.put(signed["url"], data=body, headers=signed["headers"], timeout=10)
    assert resp.status_code == 200, resp.text
    assert store.get_bytes("staging/u.parquet") == body
    # moto 5.2 verifies none of this (checked by hand: a wrong body, a wrong length, no headers
    # and an expired URL all get 200), so rejection is AWS's job; here we prove what is signed.


def test_presigned_put_without_checksum_signs_only_the_length(store: S3ObjectStore) -> None:
    # Given / When a presign without a checksum
    signed = store.presign_put("staging/v.parquet", max_bytes=42)
    # Then only Content-Length is required, and the default expiry is 15 minutes
    assert signed["headers"] == {"Content-Length": "42"}
    assert parse_qs(urlsplit(signed["url"]).query)["X-Amz-Expires"] == ["900"]


def test_filesystem_carries_the_sessions_credentials_and_endpoint(
    local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given static credentials in the environment (as Lambda provides them)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-example")
    store = S3ObjectStore("b-c-d", region="eu-west-1", endpoint_url=local_aws.endpoint_url)
    # When we build its pyarrow filesystem
    options = store.filesystem().__reduce__()[1][0]  # the options pyarrow pickles to workers
    # Then boto3's resolved credentials and the emulator's address are handed over explicitly
    # (moto accepts any key, so only the configuration can show this)
    assert (options["access_key"], options["secret_key"], options["session_token"]) == (
        "AKIDEXAMPLE",
        "secret-example",
        "token-example",
    )
    assert options["endpoint_override"] == f"127.0.0.1:{local_aws.port}"
    assert (options["scheme"], options["region"]) == ("http", "eu-west-1")
