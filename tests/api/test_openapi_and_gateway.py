"""The served OpenAPI document, the import-time budget, and the local gateway's event shape."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


IMPORT_BUDGET_MS = 600


def test_importing_the_api_handler_is_fast_and_does_not_import_pyarrow(tmp_path: Path) -> None:
    # Bytecode as a deployment ships it (compiled on a warm-up run into a private cache dir).
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc"), "PYTHONDONTWRITEBYTECODE": ""}
    code = "import sys, fusou_compaction.handlers.api; print('pyarrow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, check=True, capture_output=True, text=True
    )
    assert run.stdout.strip() == "False", "pyarrow must be imported lazily (only when an upload is inspected)"
    line = next(line for line in run.stderr.splitlines() if line.endswith("| fusou_compaction.handlers.api"))
    cumulative_ms = int(line.split("|")[1]) / 1000
    top = sorted(
        (int(ln.split("|")[1]), ln.split("|")[2].strip())
        for ln in run.stderr.splitlines()[1:]
        if ln.split("|")[2].startswith(("   ", " ")) and ln.split("|")[2].count("  ") <= 2
    )[-6:]
    # Target < 300 ms (0.34 s measured with bytecode, 0.74 s without); the bound leaves room for a
    # loaded machine, and still fails if pyarrow, boto3's resources or the engine come back eagerly.
    assert cumulative_ms < IMPORT_BUDGET_MS, (
        f"import fusou_compaction.handlers.api: {cumulative_ms:.0f} ms cumulative (budget {IMPORT_BUDGET_MS} ms); "
        f"largest direct imports: {[(name.strip(), us // 1000) for us, name in top]}"
    )


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
