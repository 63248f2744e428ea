"""Schema-driven fuzzing (schemathesis) of the served OpenAPI document, over HTTP: zero 5xx.

Generated requests carry valid credentials (the owner's JWT on upload routes, the admin token
elsewhere) so they get past authentication and reach validation and the logic behind it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from fusou_compaction.handlers.api import openapi_document
from fusou_compaction.local.apigw import LocalApiGateway

from .conftest import Api

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


# The document the API serves (test_openapi proves the served one is this one). Loaded here, not
# from the URL, so pytest can collect one test per operation before any server runs.
schema = schemathesis.openapi.from_dict(json.loads(openapi_document()))
# Parquet bodies are bytes like any other: fuzz them as octet-stream is.
schemathesis.serializer.alias("application/vnd.apache.parquet", "application/octet-stream")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_with_a_5xx(case: Any, api: Api, gateway: LocalApiGateway) -> None:
    user_route = case.operation.path.endswith(("/upload", "/upload-url"))
    headers = api.bearer(api.alice) if user_route else api.admin()
    with requests.Session() as session:
        response = case.call(base_url=gateway.url, session=session, headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
