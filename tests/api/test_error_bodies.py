"""5xx bodies say what failed in general terms and carry the request id; the detail goes to the
logs only (issue 16, item 6). 4xx bodies keep their specific messages.

A dependency is made to fail with a message full of what must not reach a client (a queue URL, a
KMS key, an object key, a database password); the body must hold none of it, and the log line for
the same request must hold all of it.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from fusou_compaction.catalog.errors import CatalogUnavailable, LeaseNotHeld
from fusou_compaction.handlers.deps import use_dependencies
from fusou_compaction.logic.auth import mint_dev_token
from fusou_compaction.ports.messaging import QueueError
from fusou_compaction.ports.object_store import ObjectStoreError

from .conftest import JWT_SECRET, Api, call, invoke_event, log_records, parquet_bytes

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/kc-compaction-prod-queue"
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
OBJECT_KEY = "datasets/5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a10/battles/fragments/private-object.parquet"
DB_PASSWORD = "pw-Zm9vYmFyYmF6"  # a database URL with its password, as a driver error would print it
SECRETS = (QUEUE_URL, KMS_KEY, OBJECT_KEY, DB_PASSWORD, "123456789012")
ISSUER = "https://error-bodies.supabase.co/auth/v1"


class Failing:
    """The real adapter, except that ``method`` raises ``error``."""

    def __init__(self, real: Any, method: str, error: BaseException) -> None:
        self._real, self._method, self._error = real, method, error

    def __getattr__(self, name: str) -> Any:
        if name == self._method:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise self._error

            return fail
        return getattr(self._real, name)


@pytest.fixture
def app_api(api: Api) -> Api:
    """The API with an explicit issuer, so the tokens below do not depend on how the default is found."""
    return api.with_settings(jwt_issuer=ISSUER)


def bearer(user: UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_dev_token(user, JWT_SECRET, ISSUER)}"}


def failing(api: Api, adapter: str, method: str, error: BaseException) -> None:
    use_dependencies(replace(api.deps, **{adapter: Failing(getattr(api.deps, adapter), method, error)}))


def status_event(api: Api, dataset: object) -> dict[str, Any]:
    return invoke_event("GET", f"/api/compaction/datasets/{dataset}", api.admin())


def sanitize_event(api: Api, dataset: object) -> dict[str, Any]:
    body = json.dumps({"datasetId": str(dataset)}).encode()
    return invoke_event(
        "POST", "/api/compaction/sanitize-state", {**api.admin(), "Content-Type": "application/json"}, body
    )


def upload_event(user: UUID, dataset: object) -> dict[str, Any]:
    return invoke_event(
        "POST",
        f"/api/compaction/upload?datasetId={dataset}&table=battles",
        {**bearer(user), "Content-Type": "application/vnd.apache.parquet"},
        parquet_bytes(2),
    )


def upload(user: UUID, dataset: object) -> None:
    response = call(upload_event(user, dataset))
    assert response["statusCode"] == 201, response


def assert_general_5xx(
    response: dict[str, Any], event: dict[str, Any], logs: io.StringIO, status: int, code: str, message: str
) -> None:
    request_id = event["requestContext"]["requestId"]
    # The body: the general message and the request id, none of the failure's detail
    assert response["statusCode"] == status, response
    assert json.loads(response["body"]) == {"error": code, "message": message, "details": {"requestId": request_id}}
    for secret in SECRETS:
        assert secret not in response["body"], secret
    # The log: the detail and the traceback, under the same request id
    records = log_records(logs)
    errors = [r for r in records if r.get("level") == "ERROR" and r.get("correlation_id") == request_id]
    assert len(errors) == 1, records
    logged = json.dumps(errors[0])
    assert errors[0]["message"] == message and errors[0]["status"] == status and "exception" in errors[0], errors[0]
    assert any(secret in logged for secret in SECRETS), errors[0]


def test_an_unavailable_catalog_is_a_503_that_names_the_catalog_only(app_api: Api, logs: io.StringIO) -> None:
    # Given a catalog whose connection fails with the driver's full message
    failing(
        app_api,
        "catalog",
        "get_dataset",
        CatalogUnavailable(f"connection to postgres://svc:{DB_PASSWORD}@db.internal:5432/catalog failed: timeout"),
    )
    # When a dataset's status is asked for
    event = status_event(app_api, uuid4())
    response = call(event)
    # Then the body says the catalog is unavailable, with the request id, and the logs say why
    assert_general_5xx(response, event, logs, 503, "unavailable", "the catalog is unavailable; retry later")
    assert DB_PASSWORD in logs.getvalue()


def test_a_failing_queue_is_a_503_without_its_url_or_key(app_api: Api, logs: io.StringIO) -> None:
    # Given a dataset, and a queue that refuses the message with SQS's and KMS's detail
    dataset = uuid4()
    upload(app_api.alice, dataset)
    failing(
        app_api,
        "queue",
        "send",
        QueueError(f"SendMessage to {QUEUE_URL} failed: KMS.AccessDeniedException for {KMS_KEY}"),
    )
    # When its compaction is asked for
    event = sanitize_event(app_api, dataset)
    response = call(event)
    # Then 503 names the queue in general terms; the URL and the key are in the logs only
    assert_general_5xx(response, event, logs, 503, "unavailable", "the queue is unavailable; retry later")
    assert QUEUE_URL in logs.getvalue() and KMS_KEY in logs.getvalue()


def test_a_failing_object_store_is_a_503_without_the_object_key(app_api: Api, logs: io.StringIO) -> None:
    failing(app_api, "store", "put_if_absent", ObjectStoreError(f"PutObject {OBJECT_KEY}: AccessDenied ({KMS_KEY})"))
    event = upload_event(app_api.alice, uuid4())
    response = call(event)
    assert_general_5xx(response, event, logs, 503, "unavailable", "the object store is unavailable; retry later")
    assert OBJECT_KEY in logs.getvalue()


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(f"unexpected answer from {QUEUE_URL} while reading {OBJECT_KEY}"),
        KeyError(OBJECT_KEY),
        LeaseNotHeld(f"run holds no lease (dsn postgres://svc:{DB_PASSWORD}@db.internal/catalog)"),
    ],
    ids=["RuntimeError", "KeyError", "an unmapped catalog error"],
)
def test_an_unexpected_error_is_a_500_with_the_request_id_only(
    app_api: Api, logs: io.StringIO, error: Exception
) -> None:
    # Given a bug (or a failure nobody mapped) deep in a dependency
    failing(app_api, "catalog", "get_dataset", error)
    # When it surfaces in a request
    event = status_event(app_api, uuid4())
    response = call(event)
    # Then the client gets a general 500 with the request id; the logs get the exception
    assert_general_5xx(
        response, event, logs, 500, "internal_error", "internal error; retry later, or report the request id"
    )


def test_4xx_bodies_keep_their_specific_messages(app_api: Api) -> None:
    # An unknown dataset, another user's dataset, a bad credential: each says exactly what is wrong.
    unknown = uuid4()
    status = json.loads(call(status_event(app_api, unknown))["body"])
    assert status["error"] == "not_found" and str(unknown) in status["message"], status
    dataset = uuid4()
    upload(app_api.alice, dataset)
    event = invoke_event("GET", f"/api/compaction/datasets/{dataset}", bearer(app_api.bob))
    forbidden = json.loads(call(event)["body"])
    assert forbidden == {
        "error": "forbidden",
        "message": f"dataset {dataset} belongs to another user",
        "details": None,
    }, forbidden
    event = invoke_event("GET", f"/api/compaction/datasets/{dataset}", {"Authorization": "Basic x"})
    assert json.loads(call(event)["body"])["message"] == "Authorization must be 'Bearer <token>'"
