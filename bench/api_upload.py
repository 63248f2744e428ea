"""Upload of a 1 MB fragment end to end through the local API vs. the floor it cannot beat.

API path: HTTP → LocalApiGateway (base64 event) → JWT check → Parquet footer check → SHA-256 →
ownership read → conditional S3 put → register_fragment. Floor: a bare ``put_object`` of the same
bytes plus one catalog round trip (``register_fragment``). Both against moto's server and a local
PostgreSQL. Prints medians and the ratio (issue 5 target: at most 2x).

    .venv/bin/python bench/api_upload.py [--runs 30] [--size-mb 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # EMF lines would bury the result

import argparse
import hashlib
import io
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from fusou_compaction import keys
from fusou_compaction.adapters.alerts import LogAlerts
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.migrate import migrate
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.handlers.deps import Dependencies, use_dependencies
from fusou_compaction.local.apigw import LocalApiGateway
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.local.postgres import PostgresServer
from fusou_compaction.logic.auth import mint_dev_token
from fusou_compaction.settings import LOCAL_JWT_ISSUER, Settings

SECRET = "bench-secret-" + "x" * 40


def fragment(size_mb: float, seed: int) -> bytes:
    # Random bytes do not compress: the file is about size_mb on disk.
    rng = random.Random(seed)  # noqa: S311 (test data, not crypto)
    rows = int(size_mb * 1024)
    buf = io.BytesIO()
    pq.write_table(pa.table({"v": [rng.randbytes(1024) for _ in range(rows)]}), buf, compression="none")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size-mb", type=float, default=1.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as pg, LocalAws() as aws:
        del tmp
        migrate(pg.url)
        s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name=aws.region)
        sqs = boto3.client("sqs", endpoint_url=aws.endpoint_url, region_name=aws.region)
        s3.create_bucket(Bucket="bench-bucket")
        queue_url = sqs.create_queue(QueueName="bench-queue")["QueueUrl"]
        dlq_url = sqs.create_queue(QueueName="bench-dlq")["QueueUrl"]
        settings = Settings(
            region=aws.region,
            aws_endpoint_url=aws.endpoint_url,
            bucket="bench-bucket",
            queue_url=queue_url,
            dlq_url=dlq_url,
            catalog_transport="postgres",
            database_url=pg.url,
            jwt_secret=SECRET,
            admin_token="bench-admin",  # noqa: S106 (a local throwaway stack)
            supabase_url=None,
            jwt_issuer=LOCAL_JWT_ISSUER,
        )
        catalog = Catalog(PostgresRpc(pg.url, max_size=4))
        use_dependencies(
            Dependencies(
                settings=settings,
                catalog=catalog,
                store=S3ObjectStore("bench-bucket", region=aws.region, endpoint_url=aws.endpoint_url),
                queue=SqsQueue(sqs, queue_url),
                dlq=SqsQueue(sqs, dlq_url),
                orchestrator=StepFunctionsOrchestrator(
                    boto3.client("stepfunctions", endpoint_url=aws.endpoint_url, region_name=aws.region), ""
                ),
                alerts=LogAlerts(),
            )
        )
        user, dataset = uuid4(), uuid4()
        token = mint_dev_token(user, SECRET, LOCAL_JWT_ISSUER)
        files = [fragment(args.size_mb, seed) for seed in range(2 * args.runs + 4)]
        api_times: list[float] = []
        floor_times: list[float] = []
        with LocalApiGateway() as gw, requests.Session() as http:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
            url = f"{gw.url}/api/compaction/upload?datasetId={dataset}&table=bench"
            for i, data in enumerate(files):
                # Alternate the two paths so drift on a busy machine hits both alike; the first two are warm-up.
                if i % 2 == 0:
                    t = time.perf_counter()
                    r = http.post(url, data=data, headers=headers, timeout=60)
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 201, r.text
                    (api_times if i >= 4 else []).append(elapsed)
                else:
                    sha = hashlib.sha256(data).hexdigest()
                    key = keys.fragment_key(dataset, "bench", sha)
                    t = time.perf_counter()
                    s3.put_object(Bucket="bench-bucket", Key=key, Body=data)
                    catalog.register_fragment(
                        dataset_id=dataset,
                        owner_id=user,
                        table="bench",
                        object_key=key,
                        size_bytes=len(data),
                        row_count=1,
                        sha256=sha,
                        schema_fingerprint="bench",
                    )
                    elapsed = time.perf_counter() - t
                    (floor_times if i >= 4 else []).append(elapsed)
        use_dependencies(None)
        catalog.close()

    api_ms, floor_ms = statistics.median(api_times) * 1000, statistics.median(floor_times) * 1000
    print(f"fragment: {len(files[0]) / 1e6:.2f} MB, {len(api_times)} runs each (medians)")
    print(f"API upload through LocalApiGateway: {api_ms:.1f} ms")
    print(f"bare put_object + register_fragment: {floor_ms:.1f} ms")
    print(f"ratio: {api_ms / floor_ms:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
