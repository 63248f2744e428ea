"""The REST API: DESIGN's routes on one function, binary uploads, throttling, access logs, validation."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.cfn import join_strings
from tests.infra.conftest import Synthesized

ROUTES = {
    ("POST", "/api/compaction/upload"),
    ("POST", "/api/compaction/upload-url"),
    ("POST", "/api/compaction/sanitize-state"),
    ("POST", "/api/compaction/trigger-scheduled"),
    ("GET", "/api/compaction/dlq-status"),
    ("GET", "/api/compaction/datasets/{dataset_id}"),
    ("POST", "/api/compaction/dlq-redrive"),
    ("POST", "/api/compaction/quarantine"),
}
OPENAPI = ("GET", "/api/compaction/openapi.json")  # served by the function, left out of its own document


def _paths(synth: Synthesized) -> dict[str, str]:
    """Resource logical id -> full path."""
    resources = synth.of_type("AWS::ApiGateway::Resource")
    api_id = synth.logical_id(synth.stack.api.rest_api)

    def path(lid: str) -> str:
        props = resources[lid]["Properties"]
        parent = props["ParentId"]
        prefix = "" if parent == {"Fn::GetAtt": [api_id, "RootResourceId"]} else path(parent["Ref"])
        return f"{prefix}/{props['PathPart']}"

    return {lid: path(lid) for lid in resources}


def _methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _paths(synth)
    return {
        (m["Properties"]["HttpMethod"], paths[m["Properties"]["ResourceId"]["Ref"]]): m["Properties"]
        for m in synth.of_type("AWS::ApiGateway::Method").values()
    }


def test_every_design_route_and_the_openapi_document_proxy_to_the_api_function(synth: Synthesized) -> None:
    methods = _methods(synth)
    assert set(methods) == ROUTES | {OPENAPI}
    api_fn = synth.logical_id(synth.stack.api.function)
    for route, method in methods.items():
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY", route
        assert api_fn in json.dumps(integration["Uri"]), route
    assert synth.function("api")["Handler"] == "fusou_compaction.handlers.api.handler"


def test_every_route_is_validated_json_routes_need_an_object_body(synth: Synthesized) -> None:
    [(validator_id, validator)] = synth.of_type("AWS::ApiGateway::RequestValidator").items()
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    methods = _methods(synth)
    for route, method in methods.items():
        assert method["RequestValidatorId"] == {"Ref": validator_id}, route
    [model] = [m["Properties"] for m in synth.of_type("AWS::ApiGateway::Model").values()]
    assert model["Schema"]["type"] == "object"
    assert "RequestModels" in methods[("POST", "/api/compaction/sanitize-state")]
    assert "RequestModels" not in methods[("POST", "/api/compaction/upload")]  # raw Parquet or multipart
    assert methods[("GET", "/api/compaction/datasets/{dataset_id}")]["RequestParameters"] == {
        "method.request.path.dataset_id": True
    }


def test_gateway_routes_are_the_api_apps_routes() -> None:
    # The handler's resolver is the other half of every route: same methods, same paths.
    from fusou_compaction.handlers.api import app

    def key(r) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        return r.method.upper(), re.sub(r"<(\w+)>", r"{\1}", r.path)  # <dataset_id> -> {dataset_id}

    routes = app._static_routes + app._dynamic_routes
    registered = {key(r) for r in routes}
    documented = {key(r) for r in routes if r.include_in_schema}
    assert registered == ROUTES | {OPENAPI}
    assert documented == ROUTES


def test_upload_accepts_the_binary_bodies_the_api_app_expects(synth: Synthesized) -> None:
    from fusou_compaction.handlers.api import BINARY_MEDIA_TYPES

    api = synth.props(synth.logical_id(synth.stack.api.rest_api))
    assert set(BINARY_MEDIA_TYPES) <= set(api["BinaryMediaTypes"])
    assert {"application/vnd.apache.parquet", "application/octet-stream", "multipart/form-data"} <= set(
        api["BinaryMediaTypes"]
    )


def _stage(synth: Synthesized) -> dict[str, Any]:
    [stage] = [r["Properties"] for r in synth.of_type("AWS::ApiGateway::Stage").values()]
    return stage


def test_stage_is_throttled_traced_and_access_logged(synth: Synthesized) -> None:
    stage = _stage(synth)
    assert stage["StageName"] == "dev"
    assert stage["TracingEnabled"] is True
    log_group = synth.logical_id(synth.stack.api.access_logs)
    assert join_strings(stage["AccessLogSetting"]["DestinationArn"]).endswith(f":log-group:<{log_group}>")
    assert "$context.requestId" in stage["AccessLogSetting"]["Format"]
    settings = {(s["HttpMethod"], s["ResourcePath"]): s for s in stage["MethodSettings"]}
    everything = settings[("*", "/*")]
    assert everything["ThrottlingRateLimit"] > 0 and everything["ThrottlingBurstLimit"] > 0
    assert everything["LoggingLevel"] == "INFO" and everything["DataTraceEnabled"] is False
    admin = settings[("POST", "/~1api~1compaction~1trigger-scheduled")]
    assert admin["ThrottlingRateLimit"] < everything["ThrottlingRateLimit"]


def test_gateway_errors_keep_the_service_error_shape(synth: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.of_type("AWS::ApiGateway::GatewayResponse").values()
    }
    for kind in ("BAD_REQUEST_BODY", "DEFAULT_4XX", "DEFAULT_5XX"):
        template = responses[kind]["ResponseTemplates"]["application/json"]
        assert '"error":' in template and '"message": $context.error.messageString' in template
        assert '"details": null' in template


def test_api_function_fits_api_gateways_timeout(synth: Synthesized) -> None:
    assert synth.function("api")["Timeout"] <= 29
