"""Upload checks (issue 18, item 2): what can be checked cheaply, in bounded memory, is checked
before anything is stored, for direct and presigned uploads alike; each refusal is a 4xx naming
the check, and the column or the limit."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any
from uuid import UUID, uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.errors import CatalogNotFound
from fusou_compaction.handlers import register
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.logic.fragment_checks import UploadLimits, check_fragment

from ..hostile_parquet import CORPUS, Case, write
from ..odd_parquet import nested_list, nested_struct
from .conftest import Api, call, error_of, invoke_event
from .test_presigned import ask_url, put_presigned, s3_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
UPLOAD = "/api/compaction/upload"
REFUSED = [c for c in CORPUS if c.refused]
ACCEPTED = [c for c in CORPUS if not c.refused]


def raw(api: Api, data: bytes, dataset: UUID) -> dict[str, Any]:
    headers = {**api.bearer(api.alice), "Content-Type": "application/vnd.apache.parquet"}
    return call(invoke_event("POST", f"{UPLOAD}?datasetId={dataset}&table=battles", headers, data))


def multipart(api: Api, data: bytes, dataset: UUID) -> dict[str, Any]:
    boundary = "----fusou"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="datasetId"\r\n\r\n{dataset}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="table"\r\n\r\nbattles\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.parquet"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**api.bearer(api.alice), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return call(invoke_event("POST", UPLOAD, headers, body))


def nothing_stored(api: Api, dataset: UUID) -> bool:
    try:
        api.deps.catalog.get_dataset(dataset)
    except CatalogNotFound:
        return list(api.deps.store.list_objects(keys.dataset_prefix(dataset))) == []
    return False


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
@pytest.mark.parametrize("send", [raw, multipart], ids=["raw", "multipart"])
def test_each_hostile_file_is_refused_by_name_and_nothing_is_stored(api: Api, case: Case, send: Any) -> None:
    # Given a hostile file, uploaded directly to a new dataset
    dataset = uuid4()
    # When the API handles it
    status, code, message = error_of(send(api, case.build(), dataset))
    # Then the answer names the check (and the column or the limit), and nothing was stored
    assert (status, code) == case.upload, message
    if case.detail:
        assert case.detail in message
    body = json.loads(send(api, case.build(), dataset)["body"])
    assert case.details.items() <= (body["details"] or {}).items(), body
    assert nothing_stored(api, dataset)


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_each_hostile_file_is_refused_the_same_way_when_presigned(api: Api, case: Case) -> None:
    # Given a presigned PUT of a hostile file
    dataset, data = uuid4(), case.build()
    grant = json.loads(ask_url(api, dataset, data)["body"])
    assert put_presigned(grant, data).status_code == 200
    # When S3 notifies the register function
    [outcome] = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))["results"]
    # Then it is rejected for the same reason the API gives, staging is emptied, nothing is stored
    direct = error_of(raw(api, data, uuid4()))
    assert outcome["status"] == "rejected" and outcome["reason"] == direct[2]
    assert list(api.deps.store.list_objects(keys.STAGING_PREFIX)) == []
    assert nothing_stored(api, dataset)
    recorded = [f for f in api.deps.catalog.list_recent_failures(50) if f.dataset_id == dataset]
    assert [f.error for f in recorded] == [f"upload rejected: {direct[2]}"]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_the_odd_but_valid_files_are_stored_with_the_rows_they_hold(api: Api, case: Case) -> None:
    dataset = uuid4()
    response = raw(api, case.build(), dataset)
    assert response["statusCode"] == 201, response
    assert json.loads(response["body"])["rowCount"] == case.rows
    assert api.deps.catalog.get_dataset(dataset).live_rows == case.rows


def _columns(n: int) -> bytes:
    return write(pa.table({f"c{i}": [i] for i in range(n)}))


def test_the_column_limit_is_inclusive(api: Api) -> None:
    api = api.with_settings(upload_max_columns=12)
    assert raw(api, _columns(12), uuid4())["statusCode"] == 201
    status, code, message = error_of(raw(api, _columns(13), uuid4()))
    assert (status, code) == (422, "too_many_columns") and "13 columns" in message and "at most 12" in message


@pytest.mark.parametrize(
    ("build", "depth"),
    [(nested_struct, 98), (nested_list, 49)],
    ids=["structs", "lists"],
)
def test_nesting_up_to_pyarrows_default_depth_is_accepted_and_one_more_level_refused(
    api: Api, build: Any, depth: int
) -> None:
    # Given columns exactly 100 Parquet levels deep (the root and the leaf counted), and one deeper
    def file(d: int) -> bytes:
        t, value = build(d)
        return write(pa.table({"deep": pa.array([value], t)}))

    # Then the first is stored and the second refused, naming the column and the limit
    assert raw(api, file(depth), uuid4())["statusCode"] == 201
    response = raw(api, file(depth + 1), uuid4())
    assert error_of(response)[:2] == (422, "nesting_too_deep")
    assert json.loads(response["body"])["details"] == {"column": "deep", "limit": 100}


def test_nesting_too_deep_for_the_reader_to_open_is_still_named(api: Api) -> None:
    # Given a schema nested deeper than the engine's reader opens at all (256 levels)
    t, value = nested_struct(300)
    response = raw(api, write(pa.table({"deep": pa.array([value], t)})), uuid4())
    # Then it is refused as too deep, not as unreadable
    status, code, message = error_of(response)
    assert (status, code) == (422, "nesting_too_deep") and "302" in message


def test_the_decode_budget_is_inclusive(api: Api) -> None:
    # Given a file, and what it decodes to
    data = write(pa.table({"log": ["z" * 1000] * 500}), compression="zstd")
    decoded = check_fragment(data, UploadLimits()).decoded_bytes
    # Then a budget of exactly that takes it, one byte less refuses it as a bomb
    exact = api.with_settings(upload_decode_floor_bytes=decoded, upload_decode_ratio=1)
    assert raw(exact, data, uuid4())["statusCode"] == 201
    short = api.with_settings(upload_decode_floor_bytes=decoded - 1, upload_decode_ratio=1)
    status, code, message = error_of(raw(short, data, uuid4()))
    assert (status, code) == (422, "decode_budget_exceeded") and str(decoded - 1) in message


def test_the_decode_budget_grows_with_the_files_size(api: Api) -> None:
    data = write(pa.table({"log": ["z" * 1000] * 500}), compression="zstd")
    decoded = check_fragment(data, UploadLimits()).decoded_bytes
    ratio = -(-decoded // len(data))  # the smallest ratio that covers it
    assert (
        raw(api.with_settings(upload_decode_floor_bytes=1, upload_decode_ratio=ratio), data, uuid4())["statusCode"]
        == 201
    )
    refused = api.with_settings(upload_decode_floor_bytes=1, upload_decode_ratio=ratio - 1)
    assert error_of(raw(refused, data, uuid4()))[:2] == (422, "decode_budget_exceeded")


def test_a_bomb_is_refused_after_decoding_no_more_than_its_budget() -> None:
    # Given a 1.5 KB file that decodes to 256 MiB (one dictionary value, repeated)
    bomb = next(c for c in CORPUS if c.name == "decode bomb").build()
    limits = UploadLimits(decode_floor_bytes=1 << 20, decode_ratio=1)
    # When it is checked, Then it is refused, having decoded in slices of at most a few MiB
    with pytest.raises(Exception, match="decompression bomb") as caught:
        check_fragment(bomb, limits)
    assert type(caught.value).__name__ == "DecodeBudgetExceeded"


def test_the_presigned_check_uses_the_settings_of_the_register_function(api: Api) -> None:
    # Given a register function configured with a low column limit
    api = api.with_settings(upload_max_columns=3)
    dataset, data = uuid4(), _columns(4)
    grant = json.loads(ask_url(api, dataset, data)["body"])
    put_presigned(grant, data)
    [outcome] = register.handler(s3_event(api, grant["key"]), LocalContext(function_name="register"))["results"]
    assert outcome["status"] == "rejected" and "at most 3" in outcome["reason"]
    assert hashlib.sha256(data).hexdigest() not in json.dumps(
        [o.key for o in api.deps.store.list_objects(keys.dataset_prefix(dataset))]
    )


def _hidden_bomb() -> bytes:
    """A dictionary whose statistics say its values are one byte long ('a' and 'c' are the smallest
    and largest) while 2,000 rows point at a 1 MiB value between them: 2 GB decoded, 330 bytes."""
    dictionary = pa.array(["a", "b" * (1 << 20), "c"])
    indices = pa.array([0, 2] + [1] * 2000, pa.int32())
    return write(pa.table({"log": pa.DictionaryArray.from_arrays(indices, dictionary)}), store_schema=False)


def test_a_bomb_its_statistics_hide_is_refused_in_bounded_memory(tmp_path: Any) -> None:
    # Given the hidden bomb, checked in a process that may not map more than 1 GiB
    path = tmp_path / "bomb.parquet"
    path.write_bytes(_hidden_bomb())
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from fusou_compaction.logic.fragment_checks import DecodeBudgetExceeded, UploadLimits, check_fragment\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "try:\n"
        "    check_fragment(data, UploadLimits())\n"
        "except DecodeBudgetExceeded as exc:\n"
        "    print('refused', exc)\n"
        # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into a child's ru_maxrss.
        "peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024\n"
        "print('peak', peak)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    # Then it is refused as a bomb, having held a few MB, not the 2 GB it decodes to
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and "decompression bomb" in done.stdout, done.stdout
    assert int(done.stdout.split("peak")[1]) < 300, done.stdout


def test_the_hidden_bomb_is_refused_through_the_api(api: Api) -> None:
    dataset = uuid4()
    status, code, _ = error_of(raw(api, _hidden_bomb(), dataset))
    assert (status, code) == (422, "decode_budget_exceeded") and nothing_stored(api, dataset)


def test_the_decoded_size_counted_is_what_pyarrow_decodes_the_lakes_data_to() -> None:
    # The budget counts what the engine holds (plain types): within 1% of pyarrow's own figure
    from fusou_compaction import synth
    from fusou_compaction.engine import conform_table, normalize_schema

    for frag in synth.iter_fragments(
        tables=[*synth.TABLE_NAMES, *synth.WIDE_TABLE_NAMES], fragments=2, rows_per_fragment=2000, storage_drift=True
    ):
        counted = check_fragment(frag.data, UploadLimits()).decoded_bytes
        table = pq.read_table(pa.BufferReader(frag.data))
        plain = conform_table(table, normalize_schema(table.schema)).get_total_buffer_size()
        assert abs(counted - plain) <= plain // 100, frag.table
