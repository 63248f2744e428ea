"""The local API takes a burst of connections as API Gateway does: none reset, nothing lost."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
from uuid import uuid4

import pytest

from fusou_compaction.local.apigw import LocalApiGateway

from .conftest import Api, parquet_bytes

CLIENTS = 500


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_500_concurrent_uploads_are_all_accepted_without_a_reset(api: Api, gateway: LocalApiGateway) -> None:
    # Given 500 clients, each with its own fragment for one dataset, connecting at the same instant
    dataset = uuid4()
    bodies = [parquet_bytes(3, seed=i) for i in range(CLIENTS)]
    headers = {**api.bearer(api.alice), "Content-Type": "application/vnd.apache.parquet"}
    url = urlsplit(gateway.url)
    barrier = threading.Barrier(CLIENTS)

    def upload(i: int) -> tuple[int, str]:
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
        barrier.wait()
        try:
            conn.request("POST", f"/api/compaction/upload?datasetId={dataset}&table=battles", bodies[i], headers)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError as exc:  # ConnectionResetError, BrokenPipeError, refused...
            return -1, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    # When they all upload at once
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(upload, range(CLIENTS)))
    seconds = time.monotonic() - started
    # Then every connection is answered 201, none reset, and every fragment is registered once
    errors = [body for status, body in results if status != 201]
    print(f"\n{CLIENTS} concurrent uploads: {CLIENTS - len(errors)} answered 201 in {seconds:.1f}s")
    assert errors == [], errors[:5]
    assert len({json.loads(body)["fragmentId"] for _, body in results}) == CLIENTS
    ds = api.deps.catalog.get_dataset(dataset)
    assert (ds.live_fragments, ds.live_rows) == (CLIENTS, 3 * CLIENTS)
