"""The upload limits the README promises, at their boundary, in the handler (not the local gateway).

- A direct upload carries at most ~4.4 MB of Parquet (4,400,000 bytes): base64-encoded by API
  Gateway it must still fit Lambda's 6 MB event.
- A presigned upload is at most 200 MiB.
"""

from __future__ import annotations

import io
import math
import os
from uuid import uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction.settings import Settings

from .conftest import Api, call, error_of, invoke_event
from .test_presigned import ask_url

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
DIRECT_LIMIT = 4_400_000
PRESIGNED_LIMIT = 200 * 1024 * 1024
LAMBDA_EVENT_LIMIT = 6 * 1024 * 1024


def parquet_of_exactly(size: int) -> bytes:
    """A valid Parquet file of exactly ``size`` bytes: one incompressible value, grown to fit."""
    length = size - 1024
    for _ in range(8):
        buf = io.BytesIO()
        table = pa.table({"blob": [os.urandom(length)]})
        pq.write_table(table, buf, compression="none", use_dictionary=False, write_statistics=False)
        data = buf.getvalue()
        if len(data) == size:
            return data
        length += size - len(data)
    raise AssertionError(f"could not hit {size} bytes (got {len(data)})")


def direct_upload(api: Api, data: bytes) -> dict:  # type: ignore[type-arg]
    headers = {**api.bearer(api.alice), "Content-Type": "application/vnd.apache.parquet"}
    return call(invoke_event("POST", f"/api/compaction/upload?datasetId={uuid4()}&table=battles", headers, data))


def test_the_direct_upload_limit_is_the_documented_one_and_fits_lambdas_event() -> None:
    assert Settings.model_fields["max_direct_upload_bytes"].default == DIRECT_LIMIT
    # base64 (4 characters per 3 bytes) plus the rest of the event (headers, context: < 64 KiB)
    assert 4 * math.ceil(DIRECT_LIMIT / 3) + 64 * 1024 < LAMBDA_EVENT_LIMIT


def test_a_direct_upload_of_exactly_the_limit_is_stored(api: Api) -> None:
    # Given a Parquet file of exactly 4,400,000 bytes (the default limit, as deployed)
    assert api.settings.max_direct_upload_bytes == DIRECT_LIMIT
    data = parquet_of_exactly(DIRECT_LIMIT)
    # When it is uploaded straight to the handler, Then it is stored
    response = direct_upload(api, data)
    assert response["statusCode"] == 201, response["body"][:300]


def test_a_direct_upload_one_byte_over_the_limit_is_413(api: Api) -> None:
    data = parquet_of_exactly(DIRECT_LIMIT + 1)
    status, code, message = error_of(direct_upload(api, data))
    assert (status, code) == (413, "payload_too_large") and "upload-url" in message


def test_a_presigned_upload_of_exactly_200_mib_is_granted(api: Api) -> None:
    assert Settings.model_fields["max_presigned_upload_bytes"].default == PRESIGNED_LIMIT
    response = ask_url(api, uuid4(), b"x", sizeBytes=PRESIGNED_LIMIT)
    assert response["statusCode"] == 201, response["body"]


def test_a_presigned_upload_one_byte_over_200_mib_is_413(api: Api) -> None:
    response = ask_url(api, uuid4(), b"x", sizeBytes=PRESIGNED_LIMIT + 1)
    assert error_of(response)[:2] == (413, "payload_too_large")
