"""The API against real parts: PostgreSQL (the catalog), moto's server (S3, SQS), the local gateway.

``api`` installs real adapters with ``use_dependencies`` for one test; ``http`` talks to the
session's LocalApiGateway over HTTP, exactly as curl would.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import boto3
import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fusou_compaction.adapters.alerts import LogAlerts
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.handlers import api as api_handler
from fusou_compaction.handlers.deps import Dependencies, use_dependencies
from fusou_compaction.local.apigw import LocalApiGateway, build_event
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.logic.auth import mint_dev_token
from fusou_compaction.settings import Settings

from ..conftest import load_event

JWT_SECRET = "test-jwt-secret-long-enough-for-hs256-hs384-and-hs512-keys-0123456789"
# A Supabase project as deployed: its tokens name <url>/auth/v1 as issuer. Written out here, not
# derived by the code under test, so a wrong derivation fails every authenticated test.
SUPABASE_URL = "https://abcdefghijklmnopqrst.supabase.co"
SUPABASE_ISSUER = "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
# Nothing listens on port 1: asymmetric tokens fail fast here unless a test serves a JWKS.
UNREACHABLE_JWKS = "http://127.0.0.1:1/auth/v1/.well-known/jwks.json"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
ADMIN_TOKEN = "test-admin-token"
_names = itertools.count()

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def parquet_bytes(rows: int = 3, *, seed: int = 0, extra: dict[str, list[Any]] | None = None) -> bytes:
    columns: dict[str, list[Any]] = {
        "id": [seed * 1_000_000 + i for i in range(rows)],
        "name": [f"r{i}" for i in range(rows)],
    }
    columns.update(extra or {})
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def public_jwk(algorithm: str, key: Any, /, **fields: Any) -> dict[str, Any]:
    """``key`` (a public key, or an HMAC secret) as a JWK for ``algorithm``, with ``fields`` (kid, alg, use) set."""
    return {**json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(key)), **fields}


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A new EC key, on P-256 unless ``curve`` says otherwise."""
    return ec.generate_private_key(curve or ec.SECP256R1())


class JwksServer:
    """A JSON Web Key Set served on loopback at ``url``: every GET answers ``{"keys": keys}``.

    ``hits`` counts the GETs; ``server.shutdown()`` stops it.
    """

    def __init__(self, keys: list[dict[str, Any]], path: str = JWKS_PATH) -> None:
        body = json.dumps({"keys": keys}).encode()
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"


class Jwks(JwksServer):
    """A JWKS endpoint on loopback with one RSA and one EC key, as Supabase's asymmetric keys."""

    def __init__(self) -> None:
        self.rsa = rsa_key()
        self.ec = ec_key()
        super().__init__(
            [
                public_jwk(alg, key.public_key(), kid=kid, alg=alg, use="sig")
                for kid, key, alg in (("rsa-1", self.rsa, "RS256"), ("ec-1", self.ec, "ES256"))
            ]
        )

    def sign(self, payload: dict[str, Any], alg: str = "RS256", kid: str | None = None) -> str:
        key = self.rsa if alg == "RS256" else self.ec
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or ("rsa-1" if alg == "RS256" else "ec-1")})


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    """The RSA + EC JWKS, one per test module (a module may override it with its own key set)."""
    j = Jwks()
    yield j
    j.server.shutdown()


@dataclass
class Api:
    deps: Dependencies
    sqs: Any
    s3: Any
    settings: Settings
    users: list[UUID] = field(default_factory=lambda: [uuid4(), uuid4()])

    @property
    def alice(self) -> UUID:
        return self.users[0]

    @property
    def bob(self) -> UUID:
        return self.users[1]

    def token(self, user: UUID, **claims: Any) -> str:
        return (
            mint_dev_token(user, JWT_SECRET, SUPABASE_ISSUER, "authenticated")
            if not claims
            else jwt.encode(
                {
                    "sub": str(user),
                    "aud": "authenticated",
                    "iss": SUPABASE_ISSUER,
                    "exp": int(time.time()) + 600,
                    **claims,
                },
                JWT_SECRET,
                algorithm="HS256",
            )
        )

    def bearer(self, user: UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def admin(self) -> dict[str, str]:
        return {"X-Admin-Token": ADMIN_TOKEN}

    def with_settings(self, **changes: Any) -> Api:
        settings = self.settings.model_copy(update=changes)
        deps = replace(self.deps, settings=settings)
        use_dependencies(deps)
        return replace(self, deps=deps, settings=settings)

    def drain(self, queue_url: str | None = None, wait: int = 0) -> list[dict[str, Any]]:
        """Every message body on a queue (removing them)."""
        url = queue_url or self.deps.queue.url
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get(
                "Messages", []
            )
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def upload(self, user: UUID, dataset: UUID, data: bytes, table: str = "battles") -> dict[str, Any]:
        event = invoke_event(
            "POST",
            f"/api/compaction/upload?datasetId={dataset}&table={table}",
            {**self.bearer(user), "Content-Type": "application/vnd.apache.parquet"},
            data,
        )
        response = call(event)
        assert response["statusCode"] == 201, response
        return json.loads(response["body"])  # type: ignore[no-any-return]


def make_settings(
    local_aws: LocalAws, database_url: str, bucket: str, queue_url: str, dlq_url: str, **extra: Any
) -> Settings:
    return Settings(
        stage="dev",
        region=local_aws.region,
        aws_endpoint_url=local_aws.endpoint_url,
        bucket=bucket,
        queue_url=queue_url,
        dlq_url=dlq_url,
        catalog_transport="postgres",
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        admin_token=ADMIN_TOKEN,
        supabase_url=SUPABASE_URL,  # the issuer comes from it, as deployed
        jwks_url=UNREACHABLE_JWKS,
        **extra,
    )


@pytest.fixture
def api(local_aws: LocalAws, database_url: str, bucket: str, s3_client: Any, sqs_client: Any) -> Iterator[Api]:
    n = f"{os.getpid()}-{next(_names)}"
    dlq_url = sqs_client.create_queue(QueueName=f"api-dlq-{n}")["QueueUrl"]
    dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs_client.create_queue(
        QueueName=f"api-queue-{n}",
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    settings = make_settings(local_aws, database_url, bucket, queue_url, dlq_url)
    catalog = Catalog(PostgresRpc(database_url, max_size=4))
    sfn = boto3.client("stepfunctions", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)
    deps = Dependencies(
        settings=settings,
        catalog=catalog,
        store=S3ObjectStore(bucket, region=local_aws.region, endpoint_url=local_aws.endpoint_url),
        queue=SqsQueue(sqs_client, queue_url),
        dlq=SqsQueue(sqs_client, dlq_url, peek_for_age=True),
        orchestrator=StepFunctionsOrchestrator(sfn, ""),  # the API never starts executions
        alerts=LogAlerts(),
    )
    use_dependencies(deps)
    yield Api(deps=deps, sqs=sqs_client, s3=s3_client, settings=settings)
    use_dependencies(None)
    catalog.close()


@pytest.fixture(scope="session")
def gateway() -> Iterator[LocalApiGateway]:
    with LocalApiGateway(port=0) as gw:
        yield gw


@pytest.fixture
def http(gateway: LocalApiGateway, api: Api) -> Iterator[Callable[..., requests.Response]]:
    """``http("POST", "/api/compaction/...", **requests_kwargs)`` against the local gateway."""
    with requests.Session() as session:

        def send(method: str, path: str, **kwargs: Any) -> requests.Response:
            return session.request(method, gateway.url + path, timeout=30, **kwargs)

        yield send


def log_records(logs: io.StringIO) -> list[dict[str, Any]]:
    """The JSON records ``logs`` has caught so far."""
    return [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]


def invoke_event(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> dict[str, Any]:
    return build_event(method, target, list(headers.items()), body)


def call(event: dict[str, Any]) -> dict[str, Any]:
    return api_handler.handler(event, LocalContext(function_name="api"))  # type: ignore[no-any-return]


def sample_event(name: str, *, headers: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    """A sample API Gateway event from events/, with our credentials (and optionally a new JSON body)."""
    event = load_event(name)
    event["headers"] = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "authorization"}
    event["headers"].update(headers or {})
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        event["isBase64Encoded"] = False
    return event


def error_of(response: dict[str, Any] | requests.Response) -> tuple[int, str, str]:
    if isinstance(response, requests.Response):
        status, body = response.status_code, response.json()
    else:
        status, body = response["statusCode"], json.loads(response["body"])
    assert set(body) == {"error", "message", "details"}, body
    return status, body["error"], body["message"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
