"""upload-url + the S3 ObjectCreated register handler, on moto's server."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any
from uuid import UUID, uuid4

import pytest
import requests

from fusou_compaction import keys
from fusou_compaction.handlers import register
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.logic.status import dlq_status_body

from ..conftest import load_event
from .conftest import Api, call, error_of, parquet_bytes, sample_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def ask_url(api: Api, dataset: UUID, data: bytes, *, user: UUID | None = None, **over: Any) -> dict[str, Any]:
    body = {
        "datasetId": str(dataset),
        "table": "battles",
        "sizeBytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **over,
    }
    return call(sample_event("api_upload_url.json", headers=api.bearer(user or api.alice), body=body))


def s3_event(api: Api, key: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("s3_object_created.json"))
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = api.deps.store.bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{api.deps.store.bucket}"
    record["s3"]["object"]["key"] = key
    return event


def put_presigned(grant: dict[str, Any], data: bytes) -> requests.Response:
    return requests.put(grant["url"], data=data, headers=grant["headers"], timeout=30)


def test_presigned_upload_is_registered_by_the_s3_event(api: Api) -> None:
    # Given a presigned PUT for Alice's new dataset
    dataset, data = uuid4(), parquet_bytes(11, seed=4)
    response = ask_url(api, dataset, data)
    assert response["statusCode"] == 201, response
    grant = json.loads(response["body"])
    assert grant["method"] == "PUT" and grant["key"].startswith(f"staging/{dataset}/battles/")
    # When the client PUTs the file and S3 notifies the register handler
    assert put_presigned(grant, data).status_code == 200
    result = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    # Then the fragment is registered for Alice under its content address and staging is cleaned up
    [outcome] = result["results"]
    assert outcome["status"] == "registered", outcome
    sha = hashlib.sha256(data).hexdigest()
    assert api.deps.store.get_bytes(keys.fragment_key(dataset, "battles", sha)) == data
    ds = api.deps.catalog.get_dataset(dataset)
    assert ds.owner_id == api.alice and ds.live_fragments == 1 and ds.live_rows == 11
    assert list(api.deps.store.list_objects("staging/")) == []
    # And a redelivered event is a no-op
    again = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    assert again["results"][0]["status"] == "gone"


def test_a_put_of_other_bytes_than_declared_never_becomes_a_fragment(api: Api) -> None:
    # Given a grant whose signature binds the length and the SHA-256 (real S3 refuses other bytes;
    # moto does not check the checksum, so the register handler's own check is what we see here)
    dataset, data = uuid4(), parquet_bytes(3)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    sha_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert grant["headers"] == {"Content-Length": str(len(data)), "x-amz-checksum-sha256": sha_b64}
    # When other bytes of the same length are PUT
    other = parquet_bytes(3, seed=7)[: len(data)].ljust(len(data), b"\0")
    put_presigned(grant, other)
    result = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    # Then they are rejected and removed
    assert result["results"][0]["status"] == "rejected"
    assert list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []


def test_an_invalid_object_is_removed_and_the_failure_recorded(api: Api) -> None:
    # Given a presigned upload of bytes that are not Parquet
    dataset, data = uuid4(), b"definitely not parquet" * 10
    grant = json.loads(ask_url(api, dataset, data)["body"])
    assert put_presigned(grant, data).status_code == 200
    # When S3 notifies the register handler
    result = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    # Then it is rejected, nothing is left behind, and dlq-status shows the failure
    assert result["results"][0]["status"] == "rejected"
    assert list(api.deps.store.list_objects("staging/")) == []
    assert list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []
    [failure] = dlq_status_body(api.deps.catalog, api.deps.queue, api.deps.dlq)["recentFailures"]
    assert failure["errorStep"] == "RegisterUpload" and failure["datasetId"] == str(dataset)
    assert "Parquet" in failure["error"]


def test_an_object_without_a_ticket_is_rejected(api: Api) -> None:
    # Given an object under staging/ that no upload-url issued
    key = keys.staging_key(uuid4(), "battles", uuid4())
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=key, Body=parquet_bytes())
    # When its event arrives, Then it is removed and recorded
    result = register.handler(s3_event(api, key), LocalContext(function_name="register"))
    assert result["results"][0] == {
        "key": key,
        "status": "rejected",
        "reason": "no valid upload ticket",
        "fragment": None,
    }
    assert not api.deps.store.exists(key)


def test_an_object_whose_bytes_differ_from_the_ticket_is_rejected(api: Api) -> None:
    dataset, data = uuid4(), parquet_bytes(3)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    # Written around the presigned URL (e.g. by someone with bucket access): same size, other bytes
    api.s3.put_object(Bucket=api.deps.store.bucket, Key=grant["key"], Body=b"x" * len(data))
    result = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    assert result["results"][0]["status"] == "rejected" and "SHA-256" in result["results"][0]["reason"]


def test_events_for_other_keys_and_buckets_are_ignored(api: Api) -> None:
    event = s3_event(api, "datasets/x/y.parquet")
    other = s3_event(api, "staging/a/b/c.parquet")
    other["Records"][0]["s3"]["bucket"]["name"] = "some-other-bucket"
    event["Records"].append(other["Records"][0])
    result = register.handler(event, LocalContext(function_name="register"))
    assert [r["status"] for r in result["results"]] == ["ignored", "ignored"]


def test_upload_url_for_another_users_dataset_is_403(api: Api) -> None:
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    assert error_of(ask_url(api, dataset, b"x" * 10, user=api.bob))[:2] == (403, "forbidden")


def test_upload_url_over_the_presigned_limit_is_413(api: Api) -> None:
    response = ask_url(api, uuid4(), b"x", sizeBytes=200 * 1024 * 1024 + 1)
    assert error_of(response)[:2] == (413, "payload_too_large")


@pytest.mark.parametrize(
    "over",
    [{"sha256": "abc"}, {"sha256": "G" * 64}, {"sizeBytes": 0}, {"table": "Bad-Name"}, {"datasetId": "x"}],
)
def test_upload_url_invalid_fields_are_422(api: Api, over: dict[str, Any]) -> None:
    assert error_of(ask_url(api, uuid4(), b"xyz", **over))[:2] == (422, "invalid_field")


def test_the_sample_s3_event_parses_and_is_ignored_for_another_bucket(api: Api) -> None:
    result = register.handler(load_event("s3_object_created.json"), LocalContext(function_name="register"))
    assert result["results"][0]["status"] == "ignored"


class _CatalogDown:
    """A catalog transport whose every call fails as an unreachable Supabase does."""

    def call(self, function: str, params: Any) -> Any:
        from fusou_compaction.catalog.errors import CatalogUnavailable

        raise CatalogUnavailable("Supabase unreachable: connection refused")

    def close(self) -> None:
        pass


def retry_event(api: Api, key: str) -> dict[str, Any]:
    """The sample record of the register-retry queue (Lambda's on-failure destination), for ``key``."""
    event = copy.deepcopy(load_event("sqs_register_retry.json"))
    body = json.loads(event["Records"][0]["body"])
    body["requestPayload"] = s3_event(api, key)
    event["Records"][0]["body"] = json.dumps(body)
    return event


def test_a_registration_that_failed_is_kept_and_registered_from_the_retry_queue(api: Api) -> None:
    from dataclasses import replace

    from fusou_compaction.catalog.client import Catalog
    from fusou_compaction.handlers.deps import use_dependencies

    # Given a presigned upload PUT while the catalog is down
    dataset, data = uuid4(), parquet_bytes(6, seed=9)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    assert put_presigned(grant, data).status_code == 200
    down = replace(api.deps, catalog=Catalog(_CatalogDown()))  # type: ignore[arg-type]
    use_dependencies(down)
    # When S3's notification arrives, Then the invocation fails (Lambda retries it, then sends it
    # to the on-failure destination) and the staged object stays
    with pytest.raises(Exception, match="unreachable"):
        register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))
    assert grant["key"] in {o.key for o in api.deps.store.list_objects("staging/")}
    # When the retry queue delivers it while the catalog is still down, Then the record is reported
    # failed (SQS delivers it again after the visibility timeout)
    event = retry_event(api, grant["key"])
    failed = register.handler(event, LocalContext(function_name="register"))
    assert failed == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    # When it is delivered again once the catalog is back, Then the upload is registered
    use_dependencies(api.deps)
    assert register.handler(event, LocalContext(function_name="register")) == {"batchItemFailures": []}
    assert api.deps.catalog.get_dataset(dataset).live_rows == 6
    assert list(api.deps.store.list_objects("staging/")) == []


def test_a_retry_record_that_is_not_a_failed_invocation_is_never_acknowledged(api: Api) -> None:
    event = copy.deepcopy(load_event("sqs_register_retry.json"))
    event["Records"][0]["body"] = "{not json"
    result = register.handler(event, LocalContext(function_name="register"))
    assert result["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]
