"""More of the API's promised numbers at their boundary, where they are enforced, with the deployed
values (Settings' and the modules' defaults), not test-sized stand-ins:

- an upload has at most 1,000 leaf columns (README, "Upload limits"; the handler);
- no single value, row or dictionary may take more than 64 MiB (the engine's decode limit, checked before
  anything is stored by logic/fragment_checks.check_fragment, which both upload handlers call);
- a whole file may decode to at most max(64 MiB, 64 x its size) (the handler, at the floor and at
  the ratio);
- the project's JWKS is fetched with a 5 s timeout (logic/auth.py);
- `trigger-scheduled` without a limit claims 10 pending datasets (DESIGN; the handler);
- a bearer token is at most 16 KiB (logic/auth.py MAX_TOKEN_CHARS; in the code, not the docs).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction.logic import auth
from fusou_compaction.logic.auth import AuthUnavailable, verify_user_token
from fusou_compaction.logic.fragment_checks import DecodeBudgetExceeded, UploadLimits, check_fragment

from ..hostile_parquet import write
from .conftest import JWT_SECRET, SUPABASE_ISSUER, Api, call, error_of, invoke_event, parquet_bytes, sample_event
from .test_auth import Jwks, claims
from .test_jwks_outage import _config

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
MiB = 1024 * 1024
UPLOAD = "/api/compaction/upload"


def raw(api: Api, data: bytes, dataset: UUID | None = None) -> dict[str, Any]:
    headers = {**api.bearer(api.alice), "Content-Type": "application/vnd.apache.parquet"}
    return call(invoke_event("POST", f"{UPLOAD}?datasetId={dataset or uuid4()}&table=battles", headers, data))


# -- 1,000 leaf columns -----------------------------------------------------------------------


def test_an_upload_of_1000_columns_is_stored_and_one_of_1001_refused(api: Api) -> None:
    # Given the deployed column limit
    assert api.settings.upload_max_columns == 1000

    def columns(n: int) -> bytes:
        return write(pa.table({f"c{i}": [i] for i in range(n)}))

    # When files of 1,000 and 1,001 leaf columns are uploaded to the handler
    stored = raw(api, columns(1000))
    refused = raw(api, columns(1001))
    # Then the first is stored and the second refused, naming the limit
    assert stored["statusCode"] == 201, stored["body"][:300]
    assert error_of(refused)[:2] == (422, "too_many_columns")
    assert json.loads(refused["body"])["details"] == {"limit": 1000}


# -- 64 MiB per value ---------------------------------------------------------------------------


def _one_value(pages: int) -> bytes:
    """A Parquet file of one uncompressed binary value whose column chunk holds exactly ``pages`` bytes."""
    blob = os.urandom(pages)

    def file(n: int) -> bytes:
        buf = io.BytesIO()
        table = pa.table({"v": pa.array([blob[:n]], pa.binary())})
        pq.write_table(table, buf, compression="none", use_dictionary=False, write_statistics=False)
        return buf.getvalue()

    n = pages
    for _ in range(4):  # the page header's varints grow with the value
        data = file(n)
        got = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0).total_uncompressed_size
        if got == pages:
            return data
        n -= got - pages
    raise AssertionError(f"could not hit {pages} bytes of pages (got {got})")


@pytest.mark.parametrize(("pages", "refused"), [(64 * MiB, False), (64 * MiB + 1, True)])
def test_a_value_of_64_mib_is_accepted_and_one_byte_more_refused(pages: int, refused: bool) -> None:
    # Given a file of one value whose pages take 64 MiB, or one byte more (incompressible: the
    # file is as large, so the whole-file budget, 64 x its size, is not what decides)
    data = _one_value(pages)
    # When it is checked as both upload handlers check it, with the deployed limits
    if not refused:
        # Then 64 MiB passes
        assert check_fragment(data, UploadLimits()).rows == 1
        return
    # Then one byte more is refused, naming the column and the 64 MiB limit
    with pytest.raises(DecodeBudgetExceeded) as exc:
        check_fragment(data, UploadLimits())
    assert exc.value.details == {"column": "v", "limit": 64 * MiB}


# -- the whole file: at most max(64 MiB, 64 x its size) decoded -------------------------------


def _decoding_to(target: int) -> bytes:
    """A small file (zstd, a few KiB) of 64 strings that decodes to exactly ``target`` bytes."""
    generous = UploadLimits(decode_floor_bytes=1 << 40)
    lengths = [target // 64] * 64
    for _ in range(4):
        data = write(pa.table({"log": ["z" * n for n in lengths]}), compression="zstd")
        decoded = check_fragment(data, generous).decoded_bytes
        if decoded == target:
            return data
        lengths[-1] += target - decoded
    raise AssertionError(f"could not decode to {target} bytes (got {decoded})")


def test_a_small_file_decoding_to_64_mib_is_stored_and_one_byte_more_refused(api: Api) -> None:
    # Given the deployed budget, and files far smaller than 1 MiB (so 64 x their size is under
    # the 64 MiB floor) that decode to exactly 64 MiB, and to one byte more
    assert (api.settings.upload_decode_floor_bytes, api.settings.upload_decode_ratio) == (64 * MiB, 64)
    inside, outside = _decoding_to(64 * MiB), _decoding_to(64 * MiB + 1)
    assert max(len(inside), len(outside)) * 64 < 64 * MiB
    # When both are uploaded to the handler
    stored = raw(api, inside)
    refused = raw(api, outside)
    # Then the first is stored, and the second refused as a bomb, naming the floor as its limit
    assert stored["statusCode"] == 201, stored["body"][:300]
    assert error_of(refused)[:2] == (422, "decode_budget_exceeded")
    assert json.loads(refused["body"])["details"] == {"limit": 64 * MiB}


# -- the JWKS fetch's 5 s timeout -----------------------------------------------------------------


class SlowJwks(Jwks):
    """The loopback JWKS of test_auth, answering after ``delay`` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        good = self.server.RequestHandlerClass
        outer = self

        class Handler(good):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                time.sleep(outer.delay)
                super().do_GET()

        self.server.shutdown()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth/v1/.well-known/jwks.json"


@pytest.fixture
def slow_jwks() -> Iterator[SlowJwks]:
    auth._jwks_client.cache_clear()
    auth._jwks_down_until.clear()
    j = SlowJwks()
    yield j
    j.server.shutdown()
    auth._jwks_client.cache_clear()
    auth._jwks_down_until.clear()


@pytest.mark.parametrize(("delay", "answered"), [(4.5, True), (5.5, False)])
def test_a_jwks_answering_within_5_s_verifies_and_one_answering_later_is_unavailable(
    slow_jwks: SlowJwks, delay: float, answered: bool
) -> None:
    # Given the project's JWKS answering after 4.5 s, or after 5.5 s
    assert auth.JWKS_FETCH_TIMEOUT_SECONDS == 5
    slow_jwks.delay = delay
    token = slow_jwks.sign(claims(uuid4()))
    # When an RS256 token is verified (the first: its key set is fetched now)
    started = time.monotonic()
    if answered:
        # Then within the timeout the token verifies
        assert verify_user_token(token, _config(slow_jwks.url)) is not None
    else:
        # Then past it the caller is told to retry (503), after the timeout and not the JWKS's delay
        with pytest.raises(AuthUnavailable):
            verify_user_token(token, _config(slow_jwks.url))
        assert time.monotonic() - started < delay
    assert time.monotonic() - started >= min(delay, 5)


# -- trigger-scheduled claims 10 by default -------------------------------------------------------


def test_trigger_scheduled_without_a_limit_enqueues_10_of_11_pending_datasets(api: Api) -> None:
    # Given 11 datasets that need compaction, and the deployed default
    assert api.settings.scheduled_claim_limit == 10
    datasets = [uuid4() for _ in range(11)]
    for i, d in enumerate(datasets):
        api.upload(api.alice, d, parquet_bytes(seed=i))
    # When an admin triggers the scheduled run with an empty body
    event = sample_event("api_trigger_scheduled.json", headers=api.admin())
    event["body"] = None
    first = json.loads(call(event)["body"])
    # Then 10 are claimed and enqueued, and the 11th is left for the next trigger
    assert len(first["enqueued"]) == 10 and first["failed"] == {}
    second = json.loads(call(event)["body"])
    assert len(second["enqueued"]) == 1
    assert set(first["enqueued"]) | set(second["enqueued"]) == {str(d) for d in datasets}


# -- a bearer token of at most 16 KiB -------------------------------------------------------------


def _token_of_length(user: UUID, length: int) -> str:
    """A valid HS256 token for ``user`` of exactly ``length`` characters (a padding claim grown to fit)."""
    base = {"sub": str(user), "aud": "authenticated", "iss": SUPABASE_ISSUER, "exp": int(time.time()) + 600}
    for pad in range(length * 3 // 4 - 300, length * 3 // 4):
        token = jwt.encode({**base, "pad": "x" * pad}, JWT_SECRET, algorithm="HS256")
        if len(token) == length:
            return token
    raise AssertionError(f"no token of {length} characters")


@pytest.mark.parametrize(("length", "verified"), [(16 * 1024, True), (16 * 1024 + 1, False)])
def test_a_valid_token_of_16_kib_is_accepted_and_one_character_more_refused(
    api: Api, length: int, verified: bool
) -> None:
    # Given a correctly signed token for Alice, exactly 16 KiB long, or one character longer
    assert auth.MAX_TOKEN_CHARS == 16 * 1024
    token = _token_of_length(api.alice, length)
    # When it calls an owner route through the handler
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    response = call(invoke_event("GET", f"/api/compaction/datasets/{dataset}", {"Authorization": f"Bearer {token}"}))
    # Then the first is Alice's (200) and the second refused before it is parsed (401)
    if verified:
        assert response["statusCode"] == 200, response["body"][:300]
    else:
        status, _, message = error_of(response)
        assert status == 401 and "longer than 16384" in message


def _sized_decoding_to_64_times(size: int) -> tuple[bytes, bytes]:
    """Two files of the same 80 MiB of zstd strings decoding to exactly 64 x ``size`` bytes: one of
    exactly ``size`` bytes, one a byte smaller (their footers padded with a metadata value)."""
    generous = UploadLimits(decode_floor_bytes=1 << 40)
    target = 64 * size
    lengths = [target // 80] * 80

    def build(pad: int) -> bytes:
        table = pa.table({"log": ["z" * n for n in lengths]})
        buf = io.BytesIO()
        writer = pq.ParquetWriter(buf, table.schema, compression="zstd")
        writer.write_table(table)
        writer.add_key_value_metadata({"pad": "p" * pad})
        writer.close()
        return buf.getvalue()

    for _ in range(4):
        decoded = check_fragment(build(0), generous).decoded_bytes
        if decoded == target:
            break
        lengths[-1] += target - decoded
    pad = 0
    for _ in range(4):
        data = build(pad)
        if len(data) == size:
            break
        pad += size - len(data)
    smaller = build(pad - 1)
    assert (len(data), len(smaller)) == (size, size - 1)
    assert check_fragment(data, generous).decoded_bytes == check_fragment(smaller, generous).decoded_bytes == target
    return data, smaller


def test_a_file_decoding_to_exactly_64_times_its_size_is_stored_and_a_byte_smaller_one_refused(api: Api) -> None:
    # Given the deployed budget, and two files decoding to 80 MiB (past the 64 MiB floor, so the
    # ratio decides): one of exactly 1.25 MiB (80 MiB / 64), one a byte smaller
    assert (api.settings.upload_decode_floor_bytes, api.settings.upload_decode_ratio) == (64 * MiB, 64)
    inside, outside = _sized_decoding_to_64_times(80 * MiB // 64)
    # When both are uploaded to the handler
    stored = raw(api, inside)
    refused = raw(api, outside)
    # Then the first is stored, the second refused as a bomb, its limit 64 x its size
    assert stored["statusCode"] == 201, stored["body"][:300]
    assert error_of(refused)[:2] == (422, "decode_budget_exceeded")
    assert json.loads(refused["body"])["details"] == {"limit": 64 * len(outside)}


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True)])
def test_a_row_decoding_to_64_mib_is_accepted_and_one_byte_more_refused(extra: int, refused: bool) -> None:
    # Given a file of one row of two binary values, neither past the limit, which decodes (with
    # its two offsets of 8 bytes) to exactly 64 MiB, or to one byte more
    blob = os.urandom(32 * MiB)
    half = 32 * MiB - 8
    table = pa.table({"a": pa.array([blob[:half]], pa.binary()), "b": pa.array([blob[: half + extra]], pa.binary())})
    data = write(table, compression="none", use_dictionary=False, write_statistics=False)
    # When it is checked as both upload handlers check it, with the deployed limits
    if not refused:
        # Then 64 MiB passes
        assert check_fragment(data, UploadLimits()).decoded_bytes == 64 * MiB
        return
    # Then one byte more is refused as a row past the limit
    with pytest.raises(DecodeBudgetExceeded, match="row 0 of row group 0") as exc:
        check_fragment(data, UploadLimits())
    assert exc.value.details == {"limit": 64 * MiB}


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True)])
def test_a_dictionary_of_64_mib_is_accepted_and_one_byte_more_refused(extra: int, refused: bool) -> None:
    # Given a dictionary-encoded column of two distinct values (each under the limit, each in rows
    # of their own) whose dictionary page (4 length bytes + the value, each) takes exactly 64 MiB,
    # or one byte more
    blob = os.urandom(32 * MiB)
    half = 32 * MiB - 4
    values = [blob[:half], blob[1 : half + 1 + extra][::-1]] * 2
    data = write(
        pa.table({"d": pa.array(values, pa.binary())}),
        compression="none",
        use_dictionary=True,
        dictionary_pagesize_limit=1 << 30,
        write_statistics=False,
    )
    assert pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0).has_dictionary_page
    # When it is checked as both upload handlers check it, with the deployed limits
    if not refused:
        # Then 64 MiB passes
        assert check_fragment(data, UploadLimits()).rows == 4
        return
    # Then one byte more is refused, naming the column's dictionary and the limit
    with pytest.raises(DecodeBudgetExceeded, match="has a dictionary of 67108865 bytes") as exc:
        check_fragment(data, UploadLimits())
    assert exc.value.details == {"column": "d", "limit": 64 * MiB}
