"""Domain errors to HTTP, in one place, by exception type (never by message text).

Every error body is ``{"error": "<code>", "message": "...", "details": ...}``. A 4xx says what
was wrong; a 5xx says only what failed, in general terms, with the request id: the exception's
own text (queue URLs, object keys, KMS or database errors) goes to the logs, next to that id.
"""

from __future__ import annotations

import traceback
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from pydantic import BaseModel

from fusou_compaction.catalog.errors import (
    CatalogNotFound,
    CatalogUnavailable,
    DatasetForbidden,
    InputsNotLive,
    InvalidCatalogArgument,
)
from fusou_compaction.logic.auth import AuthUnavailable, Forbidden, Unauthorized
from fusou_compaction.logic.fragment_checks import UPLOAD_REFUSALS, InvalidParquet, NotParquet
from fusou_compaction.observability import logger
from fusou_compaction.ports.messaging import QueueError
from fusou_compaction.ports.object_store import ObjectStoreError


class BadRequest(Exception):
    """The body cannot be read at all (empty, bad JSON, broken multipart)."""


class InvalidField(Exception):
    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


class PayloadTooLarge(Exception):
    pass


class UnsupportedMediaType(Exception):
    pass


class ErrorBody(BaseModel):
    error: str
    message: str
    details: Any = None


# Most specific first; looked up along the exception's MRO.
ERRORS: dict[type[BaseException], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    DatasetForbidden: (403, "forbidden"),
    CatalogNotFound: (404, "not_found"),
    NotFoundError: (404, "not_found"),
    InputsNotLive: (409, "conflict"),
    PayloadTooLarge: (413, "payload_too_large"),
    NotParquet: (415, "not_parquet"),
    InvalidParquet: (422, InvalidParquet.code),
    # Each upload check its own name (row_count_mismatch, too_many_columns, ...): what a client fixes.
    **{cls: (422, cls.code) for cls in UPLOAD_REFUSALS},
    UnsupportedMediaType: (415, "unsupported_media_type"),
    RequestUnsupportedContentType: (415, "unsupported_media_type"),
    InvalidField: (422, "invalid_field"),
    InvalidCatalogArgument: (422, "invalid_field"),
    CatalogUnavailable: (503, "unavailable"),
    AuthUnavailable: (503, "unavailable"),
    QueueError: (503, "unavailable"),
    ObjectStoreError: (503, "unavailable"),
}
# What a 5xx body says: what failed, in general terms.
SERVER_ERROR_MESSAGES: dict[type[BaseException], str] = {
    CatalogUnavailable: "the catalog is unavailable; retry later",
    QueueError: "the queue is unavailable; retry later",
    AuthUnavailable: "the sign-in keys (JWKS) are unavailable; retry later",
    ObjectStoreError: "the object store is unavailable; retry later",
}
INTERNAL_ERROR_MESSAGE = "internal error; retry later, or report the request id"

_POWERTOOLS_VALIDATION = "aws_lambda_powertools.event_handler.middlewares.openapi_validation"


def error_response(exc: Exception, app: APIGatewayRestResolver) -> Response[Any]:
    """The response for any exception a route (or the request validation before it) raised."""
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if _raised_while_parsing_the_body(exc):
        return error(400, "bad_request", f"the body cannot be read as its Content-Type says: {exc}")
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, code = ERRORS[cls]
            if status >= 500:
                return _server_error(app, status, code, SERVER_ERROR_MESSAGES.get(cls, INTERNAL_ERROR_MESSAGE), exc)
            details = exc.details if isinstance(exc, InvalidField | InvalidParquet) else None
            return error(status, code, str(exc) or code.replace("_", " "), details)
    if isinstance(exc, ServiceError) and exc.status_code < 500:
        return error(exc.status_code, "error", str(exc.msg))
    status = exc.status_code if isinstance(exc, ServiceError) else 500
    return _server_error(app, status, "internal_error", INTERNAL_ERROR_MESSAGE, exc)


def error(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=ErrorBody(error=code, message=message, details=details).model_dump(mode="json"),
    )


def request_id(app: APIGatewayRestResolver) -> str | None:
    # API Gateway's id (the logs' correlation_id, the client's x-amzn-RequestId); Lambda's without one.
    context = app.current_event.get("requestContext") or {}
    found = context.get("requestId") if isinstance(context, dict) else None
    return found or getattr(app.lambda_context, "aws_request_id", None)


def _server_error(
    app: APIGatewayRestResolver, status: int, code: str, message: str, exc: BaseException
) -> Response[Any]:
    """A 5xx: the detail and traceback to the logs, a general message and the request id to the client."""
    logger.exception(message, exc_info=exc, extra={"status": status, "error": code})
    return error(status, code, message, {"requestId": request_id(app)})


def _validation_error(exc: RequestValidationError) -> Response[Any]:
    # Only loc/type/msg: never the input (it may hold a token) nor pydantic's internals.
    errors = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
    unreadable = any(
        e["type"] in {"json_invalid", "multipart_invalid", "form_invalid"} or tuple(e["loc"]) == ("body",)
        for e in errors
    )
    if unreadable:
        return error(400, "bad_request", "the request body is missing or is not a JSON object", errors)
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return error(422, "invalid_field", f"invalid field(s): {fields}", errors)


def _raised_while_parsing_the_body(exc: Exception) -> bool:
    # Powertools' request validation raises a bare ValueError for a multipart Content-Type without
    # a boundary (or a body that is not base64); that is the client's malformed request, not ours.
    return isinstance(exc, ValueError) and any(
        frame.f_globals.get("__name__") == _POWERTOOLS_VALIDATION and frame.f_code.co_name == "_get_body"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )
