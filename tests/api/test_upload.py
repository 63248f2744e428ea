"""POST /api/compaction/upload: raw and multipart, and every way a body can be wrong."""

from __future__ import annotations

import base64
import hashlib
import json
from uuid import uuid4

import pytest

from fusou_compaction import keys

from ..forged_parquet import battle_rows, rewrite_counts, rust_zero_count_parquet
from ..forged_parquet import parquet_bytes as forged_bytes
from .conftest import Api, b64, call, error_of, invoke_event, parquet_bytes, sample_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
UPLOAD = "/api/compaction/upload"
PARQUET = "application/vnd.apache.parquet"


def raw(
    api: Api,
    data: bytes,
    *,
    dataset: object = None,
    table: str = "battles",
    content_type: str = PARQUET,
    user: object = None,
) -> dict:
    dataset = dataset or uuid4()
    headers = {**api.bearer(user or api.alice), "Content-Type": content_type}  # type: ignore[arg-type]
    return call(invoke_event("POST", f"{UPLOAD}?datasetId={dataset}&table={table}", headers, data))


def test_sample_raw_upload_event_stores_the_fragment_and_registers_it(api: Api) -> None:
    # Given the sample API Gateway event (binary body, base64) signed by Alice
    event = sample_event("api_upload_raw.json", headers=api.bearer(api.alice))
    data = base64.b64decode(event["body"])
    dataset = event["queryStringParameters"]["datasetId"]
    # When it is handled
    response = call(event)
    # Then the fragment is stored under its content address and registered for Alice
    assert response["statusCode"] == 201, response
    body = json.loads(response["body"])
    sha = hashlib.sha256(data).hexdigest()
    assert body == {
        "datasetId": dataset,
        "table": "battles",
        "fragmentId": body["fragmentId"],
        "sizeBytes": len(data),
        "rowCount": 3,
        "sha256": sha,
        "duplicate": False,
    }
    key = keys.fragment_key(dataset, "battles", sha)  # type: ignore[arg-type]
    assert api.deps.store.get_bytes(key) == data
    dataset_row = api.deps.catalog.get_dataset(dataset)  # type: ignore[arg-type]
    assert dataset_row.owner_id == api.alice and dataset_row.compaction_needed and dataset_row.live_fragments == 1


def test_same_bytes_twice_is_a_duplicate_stored_once(api: Api) -> None:
    dataset, data = uuid4(), parquet_bytes(5)
    first = api.upload(api.alice, dataset, data)
    second = api.upload(api.alice, dataset, data)
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["fragmentId"] == first["fragmentId"]
    assert len(list(api.deps.store.list_objects(keys.dataset_prefix(dataset)))) == 1
    assert api.deps.catalog.get_dataset(dataset).live_fragments == 1


def test_multipart_form_upload_over_http(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    # Given a form as the original client sends it (datasetId, table, file)
    dataset, data = uuid4(), parquet_bytes(7, seed=1)
    # When it is posted through the local gateway
    r = http(
        "POST",
        UPLOAD,
        headers=api.bearer(api.alice),
        data={"datasetId": str(dataset), "table": "ships"},
        files={"file": ("f.parquet", data, PARQUET)},
    )
    # Then it is stored exactly (binary intact through base64 and the form parser)
    assert r.status_code == 201, r.text
    assert r.json()["rowCount"] == 7 and r.json()["sizeBytes"] == len(data)
    assert api.deps.store.get_bytes(keys.fragment_key(dataset, "ships", r.json()["sha256"])) == data


def test_raw_octet_stream_upload_over_http(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    dataset = uuid4()
    r = http(
        "POST",
        UPLOAD,
        params={"datasetId": str(dataset), "table": "battles"},
        headers={**api.bearer(api.alice), "Content-Type": "application/octet-stream"},
        data=parquet_bytes(2),
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"this is not parquet at all", "plain text"),
        (b"PAR1" + b"\0" * 40 + b"PAR1", "magic but no footer"),
        (parquet_bytes(20)[:-30] + b"PAR1", "truncated footer"),
        (parquet_bytes(20)[: len(parquet_bytes(20)) // 2], "truncated file"),
    ],
)
def test_not_parquet_is_415_and_stores_nothing(api: Api, data: bytes, why: str) -> None:
    dataset = uuid4()
    status, code, _ = error_of(raw(api, data, dataset=dataset))
    assert (status, code) == (415, "not_parquet"), why
    assert list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []


def test_a_rust_written_fragment_is_stored_with_the_rows_its_row_groups_hold(api: Api) -> None:
    # Given a fragment as FUSOU's early Rust uploader wrote it: file-level num_rows 0, 6 rows inside
    data = rust_zero_count_parquet(6)
    # When it is uploaded
    response = raw(api, data)
    # Then it is accepted with the 6 rows every reader decodes, not the footer's 0
    assert response["statusCode"] == 201, response
    assert json.loads(response["body"])["rowCount"] == 6


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (rewrite_counts(forged_bytes(battle_rows(6)), row_group_rows={0: 2}), "column 'battle_id' holds 6 values"),
        (
            rewrite_counts(forged_bytes(battle_rows(6)), row_group_rows={0: 100}, column_values={0: 100}),
            "the footer says 100 rows but 6 were decoded",
        ),
    ],
    ids=["row-group-says-fewer", "footer-says-more-than-decodes"],
)
def test_a_fragment_whose_counts_contradict_its_data_is_422_and_stores_nothing(
    api: Api, data: bytes, names: str
) -> None:
    dataset = uuid4()
    status, code, message = error_of(raw(api, data, dataset=dataset))
    assert (status, code) == (422, "row_count_mismatch")
    assert names in message
    assert list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []


def test_empty_body_is_400(api: Api) -> None:
    assert error_of(raw(api, b""))[:2] == (400, "bad_request")


def test_oversize_body_is_413_with_a_hint_to_use_upload_url(api: Api) -> None:
    api = api.with_settings(max_direct_upload_bytes=1000)
    status, code, message = error_of(raw(api, parquet_bytes(500)))
    assert (status, code) == (413, "payload_too_large")
    assert "upload-url" in message


def test_oversize_multipart_is_413(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    api.with_settings(max_direct_upload_bytes=1000)
    r = http(
        "POST",
        UPLOAD,
        headers=api.bearer(api.alice),
        data={"datasetId": str(uuid4()), "table": "t"},
        files={"file": ("f", parquet_bytes(500))},
    )
    assert error_of(r)[:2] == (413, "payload_too_large")


def test_body_over_lambdas_event_limit_is_413_at_the_gateway(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    # 5 MB of binary is ~6.7 MB once base64-encoded into the event: Lambda would refuse it.
    r = http(
        "POST",
        UPLOAD,
        params={"datasetId": str(uuid4()), "table": "t"},
        headers={**api.bearer(api.alice), "Content-Type": PARQUET},
        data=b"\0" * 5_000_000,
    )
    status, code, message = error_of(r)
    assert (status, code) == (413, "payload_too_large") and "upload-url" in message


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/png", ""])
def test_other_content_types_are_415(api: Api, content_type: str) -> None:
    assert error_of(raw(api, parquet_bytes(), content_type=content_type))[:2] == (415, "unsupported_media_type")


@pytest.mark.parametrize("dataset", ["not-a-uuid", "1234", "5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a1"])
def test_bad_dataset_uuid_is_422(api: Api, dataset: str) -> None:
    assert error_of(raw(api, parquet_bytes(), dataset=dataset))[:2] == (422, "invalid_field")


@pytest.mark.parametrize("table", ["..%2Fescape", "Battles", "a-b", "1abc", "x" * 64, "a%20b", "a.b", "%C3%A9"])
def test_unsafe_table_names_are_422(api: Api, table: str) -> None:
    assert error_of(raw(api, parquet_bytes(), table=table))[:2] == (422, "invalid_field")


def test_unsafe_table_name_in_a_form_is_422(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    r = http(
        "POST",
        UPLOAD,
        headers=api.bearer(api.alice),
        data={"datasetId": str(uuid4()), "table": "../../etc"},
        files={"file": ("f", parquet_bytes())},
    )
    assert error_of(r)[:2] == (422, "invalid_field")


def test_missing_dataset_id_is_422(api: Api) -> None:
    headers = {**api.bearer(api.alice), "Content-Type": PARQUET}
    response = call(invoke_event("POST", f"{UPLOAD}?table=battles", headers, parquet_bytes()))
    status, code, message = error_of(response)
    assert (status, code) == (422, "invalid_field") and "datasetId" in message


def test_form_without_a_file_is_400(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    r = http(
        "POST", UPLOAD, headers=api.bearer(api.alice), files={"datasetId": (None, str(uuid4())), "table": (None, "t")}
    )
    assert error_of(r)[:2] == (400, "bad_request")


def test_multipart_without_boundary_is_400(api: Api) -> None:
    headers = {**api.bearer(api.alice), "Content-Type": "multipart/form-data"}
    assert error_of(call(invoke_event("POST", UPLOAD, headers, b"garbage")))[:2] == (400, "bad_request")


def test_multipart_cut_before_its_closing_boundary_is_400_and_stores_nothing(api: Api) -> None:
    # Given a well-formed form whose body ends inside the file part (no closing boundary)
    dataset, data = uuid4(), parquet_bytes(4)
    form = (
        b'--zz\r\nContent-Disposition: form-data; name="datasetId"\r\n\r\n' + str(dataset).encode() + b"\r\n"
        b'--zz\r\nContent-Disposition: form-data; name="table"\r\n\r\nbattles\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n' + data
    )
    headers = {**api.bearer(api.alice), "Content-Type": "multipart/form-data; boundary=zz"}
    # When it is posted
    response = call(invoke_event("POST", UPLOAD, headers, form))
    # Then it is refused as unreadable, and nothing is stored
    assert error_of(response)[:2] == (400, "bad_request")
    assert list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []
    # (the same form, closed, is accepted)
    closed = call(invoke_event("POST", UPLOAD, headers, form + b"\r\n--zz--\r\n"))
    assert closed["statusCode"] == 201, closed


def test_bad_base64_body_is_400(api: Api) -> None:
    event = sample_event("api_upload_raw.json", headers=api.bearer(api.alice))
    event["body"] = "@@@not base64@@@"
    assert error_of(call(event))[:2] == (400, "bad_request")


def test_uploading_into_another_users_dataset_is_403_and_writes_nothing(api: Api) -> None:
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes(1))
    status, code, _ = error_of(raw(api, parquet_bytes(2, seed=9), dataset=dataset, user=api.bob))
    assert (status, code) == (403, "forbidden")
    assert len(list(api.deps.store.list_objects(keys.dataset_prefix(dataset)))) == 1


def test_an_admin_token_cannot_upload(api: Api) -> None:
    headers = {**api.admin(), "Content-Type": PARQUET}
    response = call(invoke_event("POST", f"{UPLOAD}?datasetId={uuid4()}&table=t", headers, parquet_bytes()))
    assert error_of(response)[:2] == (403, "forbidden")


def test_realtime_compaction_is_enqueued_when_fragments_reach_the_threshold(api: Api) -> None:
    # Given a threshold of 2 fragments
    api = api.with_settings(realtime_fragment_threshold=2)
    dataset = uuid4()
    # When the first fragment arrives, nothing is enqueued; at the second, one realtime message is
    api.upload(api.alice, dataset, parquet_bytes(1, seed=1))
    assert api.drain() == []
    api.upload(api.alice, dataset, parquet_bytes(1, seed=2))
    messages = api.drain()
    assert [(m["datasetId"], m["priority"]) for m in messages] == [(str(dataset), "realtime")]


def test_no_realtime_message_when_the_threshold_is_off(api: Api) -> None:
    dataset = uuid4()
    for seed in range(3):
        api.upload(api.alice, dataset, parquet_bytes(1, seed=seed))
    assert api.drain() == []


def test_raw_body_bytes_survive_the_gateway_exactly(api: Api) -> None:
    # Every byte value, through base64 into the event and back out in the handler.
    data = parquet_bytes(50, extra={"blob": [bytes(range(256))] * 50})
    event = invoke_event(
        "POST", f"{UPLOAD}?datasetId={uuid4()}&table=t", {**api.bearer(api.alice), "Content-Type": PARQUET}, data
    )
    assert event["isBase64Encoded"] is True and event["body"] == b64(data)
    assert json.loads(call(event)["body"])["sha256"] == hashlib.sha256(data).hexdigest()
