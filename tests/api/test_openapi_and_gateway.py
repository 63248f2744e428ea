"""The served OpenAPI document, the import-time budget, and the local gateway's event shape."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pytest

from fusou_compaction.handlers.api import app
from fusou_compaction.local.apigw import LocalApiGateway, build_event, write_response

from .conftest import Api

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
ROUTES = {
    ("post", "/api/compaction/upload"),
    ("post", "/api/compaction/upload-url"),
    ("post", "/api/compaction/sanitize-state"),
    ("post", "/api/compaction/trigger-scheduled"),
    ("get", "/api/compaction/dlq-status"),
    ("get", "/api/compaction/datasets/{dataset_id}"),
    ("post", "/api/compaction/dlq-redrive"),
    ("post", "/api/compaction/quarantine"),
}


def test_the_served_spec_is_the_apps_spec_and_lists_every_route(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    # When the spec is fetched through the gateway
    served = http("GET", "/api/compaction/openapi.json").json()
    # Then it is exactly what the app generates, and names every route of DESIGN's table
    assert served == json.loads(app.get_openapi_json_schema())
    documented = {(m, p) for p, item in served["paths"].items() for m in item}
    assert documented == ROUTES
    registered = {
        (r.method.lower(), re.sub(r"<(\w+)>", r"{\1}", r.path))
        for r in app._static_routes + app._dynamic_routes
        if r.include_in_schema
    }
    assert registered == ROUTES


def test_every_documented_error_uses_the_error_body(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    served = http("GET", "/api/compaction/openapi.json").json()
    for path, item in served["paths"].items():
        for method, op in item.items():
            errors = {c: r for c, r in op["responses"].items() if int(c) >= 400}
            assert errors, (method, path)
            for code, response in errors.items():
                ref = response["content"]["application/json"]["schema"]
                assert ref in (
                    {"$ref": "#/components/schemas/ErrorBody"},
                    {"$ref": "#/components/schemas/HTTPValidationError"},
                ), (path, code)


# What the API Lambda must not load at import (its cold start): the Parquet engine and its native
# libraries (only an upload's inspection needs them, imported then), boto3's resource layer and the
# catalog's HTTP and database clients (made on first use). How long the import takes is measured in
# `make bench` (bench/cold_imports.py), not asserted here: a timed assertion fails on a loaded
# machine and passes a slow import on a fast one.
LAZY = (
    "pyarrow",
    "numpy",
    "pandas",
    "polars",
    "duckdb",
    "boto3",
    "s3transfer",
    "supabase",
    "postgrest",
    "httpx",
    "psycopg",
)


def test_importing_the_api_handler_loads_no_engine_and_no_client_library() -> None:
    code = (
        "import json, sys, fusou_compaction.handlers.api; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {LAZY!r} "
        "or m.startswith('fusou_compaction.engine'))))"
    )
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert json.loads(run.stdout) == [], "import these lazily, where they are first needed"


def test_binary_bodies_are_base64_and_text_bodies_are_not() -> None:
    parquet = build_event(
        "POST", "/x?a=1&a=2&b=", [("Content-Type", "application/vnd.apache.parquet")], b"\x00\xffPAR1"
    )
    assert parquet["isBase64Encoded"] is True and base64.b64decode(parquet["body"]) == b"\x00\xffPAR1"
    assert parquet["queryStringParameters"] == {"a": "2", "b": ""}
    assert parquet["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}
    form = build_event("POST", "/x", [("Content-Type", "multipart/form-data; boundary=z")], b"--z--")
    assert form["isBase64Encoded"] is True
    text = build_event("POST", "/x", [("Content-Type", "application/json"), ("X-A", "1"), ("X-A", "2")], b'{"a": 1}')
    assert (text["isBase64Encoded"], text["body"]) == (False, '{"a": 1}')
    assert text["headers"]["X-A"] == "2" and text["multiValueHeaders"]["X-A"] == ["1", "2"]
    assert text["queryStringParameters"] is None and text["pathParameters"] is None
    ctx = text["requestContext"]
    assert ctx["requestId"] and ctx["stage"] and ctx["identity"]["sourceIp"] and ctx["identity"]["userArn"] is None
    empty = build_event("GET", "/x", [], b"")
    assert (empty["body"], empty["isBase64Encoded"]) == (None, False)


def test_base64_responses_are_decoded() -> None:
    status, headers, body = write_response(
        {
            "statusCode": 201,
            "headers": {"A": "b"},
            "body": base64.b64encode(b"\x01\x02").decode(),
            "isBase64Encoded": True,
        }
    )
    assert (status, headers, body) == (201, {"A": "b"}, b"\x01\x02")


def test_any_method_reaches_the_router(api: Api, http, gateway: LocalApiGateway) -> None:  # type: ignore[no-untyped-def]
    for method in ("TRACE", "PATCH", "DELETE", "OPTIONS"):
        r = http(method, "/api/compaction/upload")
        assert r.status_code < 500 and set(r.json()) == {"error", "message", "details"}, method
