"""The HTTPS API (API Gateway REST, proxy integration): uploads, triggers and status.

Each route: authenticate, parse, call one logic function, return a typed body. Domain errors
become HTTP in one place (:func:`error_response`); every error body is
``{"error": "<code>", "message": "...", "details": ...}``.

Request validation (Powertools, from the type hints) runs before the route body, so a
malformed request gets its 400/422 before authentication is looked at; nothing but the public
schema is revealed by that.
"""

from __future__ import annotations

import base64
import binascii
import traceback
from datetime import datetime
from email import policy
from email.parser import BytesParser
from functools import cache
from typing import Annotated, Any, Literal
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from fusou_compaction.catalog.errors import (
    CatalogNotFound,
    CatalogUnavailable,
    DatasetForbidden,
    InvalidCatalogArgument,
)
from fusou_compaction.handlers.deps import Dependencies, Needs, cold_start, dependencies
from fusou_compaction.keys import TABLE_NAME_RE
from fusou_compaction.logic.auth import Caller, Forbidden, Unauthorized, authenticate
from fusou_compaction.logic.presigned import issue_presigned_upload, maybe_enqueue_realtime
from fusou_compaction.logic.redrive import MAX_REDRIVE, redrive_all
from fusou_compaction.logic.scheduled import claim_and_enqueue
from fusou_compaction.logic.status import dataset_status_body, dlq_status_body
from fusou_compaction.logic.uploads import InvalidParquet, NotParquet, ensure_may_write, store_fragment
from fusou_compaction.observability import logger, metrics
from fusou_compaction.pipeline.models import CompactionMessage
from fusou_compaction.ports.messaging import QueueError
from fusou_compaction.ports.object_store import ObjectStoreError

PREFIX = "/api/compaction"
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/octet-stream")
MULTIPART = "multipart/form-data"
# What the REST API must declare as binary media types, so these bodies arrive base64-encoded.
BINARY_MEDIA_TYPES = (*PARQUET_TYPES, MULTIPART)
SHA256_HEX = r"^[0-9a-f]{64}$"

app = APIGatewayRestResolver(enable_validation=True)


def _configure_openapi() -> None:
    # Powertools' OpenAPI models cost ~100 ms to import: only when the document is asked for,
    # not on every cold start.
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

    app.configure_openapi(
        title="FUSOU compaction API",
        version="1.0.0",
        description="Upload Parquet fragments, trigger compaction and read its state.",
        security_schemes={
            "supabaseJwt": HTTPBearer(bearerFormat="JWT", description="Supabase access token of the dataset owner"),
            "adminToken": APIKey(name="X-Admin-Token", **{"in": APIKeyIn.header}),
        },
    )


USER: list[dict[str, list[str]]] = [{"supabaseJwt": []}]
OWNER_OR_ADMIN: list[dict[str, list[str]]] = [{"supabaseJwt": []}, {"adminToken": []}]
ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]


# -- errors ------------------------------------------------------------------------------------


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
    PayloadTooLarge: (413, "payload_too_large"),
    NotParquet: (415, "not_parquet"),
    InvalidParquet: (422, "invalid_parquet"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    RequestUnsupportedContentType: (415, "unsupported_media_type"),
    InvalidField: (422, "invalid_field"),
    InvalidCatalogArgument: (422, "invalid_field"),
    CatalogUnavailable: (503, "unavailable"),
    QueueError: (503, "unavailable"),
    ObjectStoreError: (503, "unavailable"),
}
# What a 5xx body says: what failed, in general terms. The exception's own text (queue URLs,
# object keys, KMS or database errors) goes to the logs only, next to the same request id.
SERVER_ERROR_MESSAGES: dict[type[BaseException], str] = {
    CatalogUnavailable: "the catalog is unavailable; retry later",
    QueueError: "the queue is unavailable; retry later",
    ObjectStoreError: "the object store is unavailable; retry later",
}
INTERNAL_ERROR_MESSAGE = "internal error; retry later, or report the request id"


def _error(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=ErrorBody(error=code, message=message, details=details).model_dump(mode="json"),
    )


def _request_id() -> str | None:
    # API Gateway's id (the logs' correlation_id, the client's x-amzn-RequestId); Lambda's without one.
    context = app.current_event.get("requestContext") or {}
    request_id = context.get("requestId") if isinstance(context, dict) else None
    return request_id or getattr(app.lambda_context, "aws_request_id", None)


def _server_error(status: int, code: str, message: str, exc: BaseException) -> Response[Any]:
    """A 5xx: the detail and traceback to the logs, a general message and the request id to the client."""
    logger.exception(message, exc_info=exc, extra={"status": status, "error": code})
    return _error(status, code, message, {"requestId": _request_id()})


def _validation_error(exc: RequestValidationError) -> Response[Any]:
    # Only loc/type/msg: never the input (it may hold a token) nor pydantic's internals.
    errors = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
    unreadable = any(
        e["type"] in {"json_invalid", "multipart_invalid", "form_invalid"} or tuple(e["loc"]) == ("body",)
        for e in errors
    )
    if unreadable:
        return _error(400, "bad_request", "the request body is missing or is not a JSON object", errors)
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return _error(422, "invalid_field", f"invalid field(s): {fields}", errors)


def _raised_while_parsing_the_body(exc: Exception) -> bool:
    # Powertools' request validation raises a bare ValueError for a multipart Content-Type without
    # a boundary (or a body that is not base64); that is the client's malformed request, not ours.
    return isinstance(exc, ValueError) and any(
        frame.f_globals.get("__name__") == _POWERTOOLS_VALIDATION and frame.f_code.co_name == "_get_body"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


_POWERTOOLS_VALIDATION = "aws_lambda_powertools.event_handler.middlewares.openapi_validation"


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def error_response(exc: Exception) -> Response[Any]:
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if _raised_while_parsing_the_body(exc):
        return _error(400, "bad_request", f"the body cannot be read as its Content-Type says: {exc}")
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, code = ERRORS[cls]
            if status >= 500:
                return _server_error(status, code, SERVER_ERROR_MESSAGES.get(cls, INTERNAL_ERROR_MESSAGE), exc)
            details = getattr(exc, "details", None) if isinstance(exc, InvalidField) else None
            return _error(status, code, str(exc) or code.replace("_", " "), details)
    if isinstance(exc, ServiceError) and exc.status_code < 500:
        return _error(exc.status_code, "error", str(exc.msg))
    status = exc.status_code if isinstance(exc, ServiceError) else 500
    return _server_error(status, "internal_error", INTERNAL_ERROR_MESSAGE, exc)


ERROR_DESCRIPTIONS = {
    400: "bad body (empty, not JSON, broken multipart)",
    401: "no or bad credential",
    403: "not yours (or not an admin)",
    404: "unknown dataset",
    413: "too large",
    415: "not Parquet, or an unsupported Content-Type",
    422: "invalid field",
}


def _responses(status: int, model: type[BaseModel], description: str, *errors: int) -> dict[int, Any]:
    # Given explicitly, Powertools documents only these: the success one first, then the errors.
    out: dict[int, Any] = {status: {"description": description, "content": {"application/json": {"model": model}}}}
    for code in errors:
        out[code] = {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"model": ErrorBody}}}
    return out


# -- models ------------------------------------------------------------------------------------


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class UploadTarget(ApiModel):
    dataset_id: UUID
    table: str = Field(pattern=TABLE_NAME_RE.pattern)


class UploadResponse(ApiModel):
    dataset_id: UUID
    table: str
    fragment_id: UUID
    size_bytes: int
    row_count: int
    sha256: str
    duplicate: bool


class UploadUrlRequest(ApiModel):
    dataset_id: UUID
    table: str = Field(pattern=TABLE_NAME_RE.pattern)
    size_bytes: int = Field(gt=0, description="exact size of the file; the signed PUT accepts only this length")
    sha256: str = Field(pattern=SHA256_HEX, description="hex SHA-256 of the file; S3 checks it on the PUT")


class UploadUrlResponse(ApiModel):
    upload_id: UUID
    dataset_id: UUID
    table: str
    key: str
    url: str
    method: Literal["PUT"]
    headers: dict[str, str] = Field(description="send every one of these headers with the PUT, unchanged")
    expires_at: datetime


class DatasetRequest(ApiModel):
    dataset_id: UUID


class SanitizeResponse(ApiModel):
    message_id: str
    dataset_id: UUID


class TriggerRequest(ApiModel):
    limit: int | None = Field(default=None, ge=1, le=100, description="datasets to claim (default: the setting, 10)")


class TriggerResponse(ApiModel):
    enqueued: list[UUID]
    failed: dict[str, str]


class QueueDepthBody(ApiModel):
    visible: int
    in_flight: int
    oldest_age_seconds: int | None


class FailureBody(ApiModel):
    dataset_id: UUID | None
    run_id: UUID | None
    error_step: str | None
    error: str
    message: str | None = Field(description="the original message body, verbatim")
    at: datetime


class DlqStatusResponse(ApiModel):
    queue: QueueDepthBody
    dlq: QueueDepthBody
    recent_failures: list[FailureBody]


class FileBody(ApiModel):
    key: str
    kind: Literal["fragment", "compacted"]
    rows: int
    bytes: int


class TableBody(ApiModel):
    fragments: int
    compacted: int
    rows: int
    bytes: int
    files: list[FileBody]


class RunBody(ApiModel):
    run_id: UUID
    status: str
    trigger: str
    error_step: str | None
    error: str | None


class DatasetStatusResponse(ApiModel):
    dataset_id: UUID
    compaction_needed: bool
    tables: dict[str, TableBody]
    runs: list[RunBody]


class RedriveRequest(ApiModel):
    max: int = Field(default=10, ge=1, le=MAX_REDRIVE, description="at most this many messages are moved")


class RedriveResponse(ApiModel):
    moved: int
    failed: int


_BINARY = {"type": "string", "format": "binary"}
UPLOAD_REQUEST_BODY = {
    "required": True,
    "description": "One Parquet file: raw (with ?datasetId=&table=) or a multipart form.",
    "content": {
        **{t: {"schema": _BINARY} for t in PARQUET_TYPES},
        MULTIPART: {
            "schema": {
                "type": "object",
                "required": ["datasetId", "table", "file"],
                "properties": {
                    "datasetId": {"type": "string", "format": "uuid"},
                    "table": {"type": "string", "pattern": TABLE_NAME_RE.pattern},
                    "file": _BINARY,
                },
            }
        },
    },
}


# -- request helpers ---------------------------------------------------------------------------


def _deps() -> Dependencies:
    return dependencies(NEEDS)


def _caller(*, admin_only: bool = False) -> Caller:
    event = app.current_event
    try:
        caller = authenticate(
            event.headers,
            config=_deps().runtime.auth(),  # secrets cached at most 5 minutes
            admin_only=admin_only,
        )
    except (Unauthorized, Forbidden) as exc:
        metrics.add_metric(name="AuthFailures", unit=MetricUnit.Count, value=1)
        logger.info("request refused", extra={"reason": str(exc), "path": event.path})
        raise
    logger.append_keys(caller=caller.principal)
    return caller


def _check_owner_or_admin(deps: Dependencies, dataset_id: UUID) -> None:
    """404 for an unknown dataset, 403 for another user's; admins pass."""
    caller = _caller()
    dataset = deps.catalog.get_dataset(dataset_id)
    if not caller.may_access(dataset.owner_id):
        raise Forbidden(f"dataset {dataset_id} belongs to another user")


def _user(caller: Caller) -> UUID:
    if caller.user_id is None:
        raise Forbidden("uploads belong to a user: send the owner's Supabase JWT")
    return caller.user_id


def _raw_body(max_bytes: int) -> bytes:
    event = app.current_event
    body = event.body or ""
    # base64 inflates by 4/3: refuse before decoding anything that cannot fit.
    limit = max_bytes * 4 // 3 + 4 if event.is_base64_encoded else max_bytes
    if len(body) > limit:
        raise PayloadTooLarge(_too_large(max_bytes))
    if not event.is_base64_encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("the body is not valid base64") from exc


def _too_large(max_bytes: int) -> str:
    return (
        f"the body is larger than {max_bytes} bytes: request a presigned URL with "
        f"POST {PREFIX}/upload-url for files up to 200 MiB"
    )


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes | None]:
    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not msg.is_multipart() or msg.defects:
        raise BadRequest("the multipart body cannot be parsed (boundary missing or broken)")
    fields: dict[str, str] = {}
    file: bytes | None = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if name == "file":
            file = payload
        else:
            try:
                fields[name] = payload.decode()
            except UnicodeDecodeError as exc:
                raise BadRequest(f"form field {name!r} is not UTF-8 text") from exc
    return fields, file


def _read_upload(dataset_id: UUID | None, table: str | None, max_bytes: int) -> tuple[UploadTarget, bytes]:
    content_type = (app.current_event.headers.get("content-type") or "").strip()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == MULTIPART:
        fields, data = _multipart(content_type, _raw_body(max_bytes + 64 * 1024))  # room for the form's framing
        if data is None:
            raise BadRequest("the multipart form has no 'file' part")
        target_input: dict[str, Any] = {"datasetId": fields.get("datasetId"), "table": fields.get("table")}
    elif media_type in PARQUET_TYPES:
        data = _raw_body(max_bytes)
        target_input = {"datasetId": dataset_id, "table": table}
    else:
        raise UnsupportedMediaType(
            f"send the file as Content-Type {' or '.join(PARQUET_TYPES)} (with ?datasetId=&table=) or as {MULTIPART}"
        )
    if len(data) > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))
    if not data:
        raise BadRequest("the file is empty")
    missing = [k for k, v in target_input.items() if v is None]
    if missing:
        raise InvalidField(
            f"missing field(s): {', '.join(missing)}", [{"loc": [k], "type": "missing"} for k in missing]
        )
    try:
        return UploadTarget.model_validate(target_input), data
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidField("invalid datasetId or table", details) from exc


# -- routes ------------------------------------------------------------------------------------


@app.post(
    f"{PREFIX}/upload",
    status_code=201,
    summary="Store one Parquet fragment",
    security=USER,
    tags=["uploads"],
    responses=_responses(201, UploadResponse, "the stored fragment", 400, 401, 403, 413, 415, 422),
    # The body is read by hand (raw or multipart), so it is described here, not inferred.
    openapi_extensions={"requestBody": UPLOAD_REQUEST_BODY},
)
def upload(
    dataset_id: Annotated[UUID | None, Query(alias="datasetId", description="raw uploads: the dataset")] = None,
    table: Annotated[str | None, Query(pattern=TABLE_NAME_RE.pattern, description="raw uploads: the table")] = None,
) -> UploadResponse:
    user = _user(_caller())
    deps = _deps()
    target, data = _read_upload(dataset_id, table, deps.settings.max_direct_upload_bytes)
    stored = store_fragment(
        deps.catalog, deps.store, owner_id=user, dataset_id=target.dataset_id, table=target.table, data=data
    )
    maybe_enqueue_realtime(deps.catalog, deps.queue, deps.settings, stored)
    metrics.add_metric(name="FragmentsUploaded", unit=MetricUnit.Count, value=1)
    return UploadResponse.model_validate(stored.to_json_dict())


@app.post(
    f"{PREFIX}/upload-url",
    status_code=201,
    summary="A presigned S3 PUT for a large fragment",
    security=USER,
    tags=["uploads"],
    responses=_responses(201, UploadUrlResponse, "a presigned PUT", 400, 401, 403, 413, 422),
)
def upload_url(body: UploadUrlRequest) -> UploadUrlResponse:
    user = _user(_caller())
    deps = _deps()
    if body.size_bytes > deps.settings.max_presigned_upload_bytes:
        raise PayloadTooLarge(f"sizeBytes is over the {deps.settings.max_presigned_upload_bytes}-byte limit")
    ensure_may_write(deps.catalog, body.dataset_id, user)
    signed = issue_presigned_upload(
        deps.store,
        owner_id=user,
        dataset_id=body.dataset_id,
        table=body.table,
        size_bytes=body.size_bytes,
        sha256_hex=body.sha256,
    )
    return UploadUrlResponse(
        upload_id=signed.ticket.upload_id,
        dataset_id=body.dataset_id,
        table=body.table,
        key=signed.key,
        url=signed.url,
        method="PUT",
        headers=signed.headers,
        expires_at=signed.ticket.expires_at,
    )


@app.post(
    f"{PREFIX}/sanitize-state",
    status_code=202,
    summary="Enqueue one dataset for compaction",
    security=OWNER_OR_ADMIN,
    tags=["compaction"],
    responses=_responses(202, SanitizeResponse, "enqueued", 400, 401, 403, 404, 422),
)
def sanitize_state(body: DatasetRequest) -> SanitizeResponse:
    deps = _deps()
    _check_owner_or_admin(deps, body.dataset_id)
    message = CompactionMessage(dataset_id=body.dataset_id, priority="manual")
    message_id = deps.queue.send(message.model_dump_json(by_alias=True))
    logger.info("manual compaction enqueued", extra={"datasetId": str(body.dataset_id), "messageId": message_id})
    return SanitizeResponse(message_id=message_id, dataset_id=body.dataset_id)


@app.post(
    f"{PREFIX}/trigger-scheduled",
    status_code=202,
    summary="Claim pending datasets and enqueue them",
    security=ADMIN,
    tags=["compaction"],
    responses=_responses(202, TriggerResponse, "what was enqueued and what failed", 400, 401, 403, 422),
)
def trigger_scheduled(body: TriggerRequest | None = None) -> TriggerResponse:
    _caller(admin_only=True)
    deps = _deps()
    s = deps.settings
    report = claim_and_enqueue(
        deps.catalog,
        deps.queue,
        limit=(body.limit if body and body.limit else s.scheduled_claim_limit),
        claimer=f"api:{app.current_event.request_context.request_id}",
        claim_seconds=s.claim_seconds,
    )
    return TriggerResponse(enqueued=report.enqueued, failed={str(k): v for k, v in report.failed.items()})


@app.get(
    f"{PREFIX}/dlq-status",
    summary="Queue and DLQ depth, recent failures",
    security=ADMIN,
    tags=["operations"],
    responses=_responses(200, DlqStatusResponse, "queue depths and recent failures", 401, 403),
)
def dlq_status() -> DlqStatusResponse:
    _caller(admin_only=True)
    deps = _deps()
    return DlqStatusResponse.model_validate(dlq_status_body(deps.catalog, deps.queue, deps.dlq))


@app.get(
    f"{PREFIX}/datasets/<dataset_id>",
    summary="Live files per table, pending fragments, last runs",
    security=OWNER_OR_ADMIN,
    tags=["compaction"],
    responses=_responses(200, DatasetStatusResponse, "the dataset", 401, 403, 404, 422),
)
def dataset_status(dataset_id: UUID) -> DatasetStatusResponse:
    deps = _deps()
    _check_owner_or_admin(deps, dataset_id)
    return DatasetStatusResponse.model_validate(dataset_status_body(deps.catalog, dataset_id))


@app.post(
    f"{PREFIX}/dlq-redrive",
    summary="Send failed messages back to the queue: those still in the DLQ, then recorded failures",
    security=ADMIN,
    tags=["operations"],
    responses=_responses(200, RedriveResponse, "how many messages moved", 400, 401, 403, 422),
)
def dlq_redrive(body: RedriveRequest) -> RedriveResponse:
    _caller(admin_only=True)
    deps = _deps()
    report = redrive_all(deps.dlq, deps.queue, deps.catalog, max_messages=body.max)
    logger.info(
        "DLQ redrive",
        extra={
            "moved": report.moved,
            "fromRecords": report.from_records,
            "failed": report.failed,
            "errors": report.errors,
        },
    )
    return RedriveResponse(moved=report.moved, failed=report.failed)


@cache
def openapi_document() -> str:
    _configure_openapi()
    return app.get_openapi_json_schema()


@app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


NEEDS = Needs("api", queue=True, dlq=True, auth=True)
cold_start(NEEDS)
