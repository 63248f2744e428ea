"""The HTTPS API (API Gateway REST, proxy integration): uploads, triggers and status.

Each route: authenticate, parse, call one logic function, return a typed body. The bodies are in
``api/models.py``; domain errors become HTTP in one place (``api/errors.py``, registered below);
the upload's raw or multipart body is read by ``api/upload_body.py``.

Request validation (Powertools, from the type hints) runs before the route body, so a
malformed request gets its 400/422 before authentication is looked at; nothing but the public
schema is revealed by that.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from fusou_compaction.api import PREFIX
from fusou_compaction.api.errors import PayloadTooLarge, error_response
from fusou_compaction.api.models import (
    DatasetRequest,
    DatasetStatusResponse,
    DlqStatusResponse,
    QuarantineAction,
    QuarantineActionResponse,
    RedriveRequest,
    RedriveResponse,
    SanitizeResponse,
    TriggerRequest,
    TriggerResponse,
    UploadResponse,
    UploadUrlRequest,
    UploadUrlResponse,
)
from fusou_compaction.api.openapi import ADMIN, OWNER_OR_ADMIN, UPLOAD_REQUEST_BODY, USER, configure_openapi, responses
from fusou_compaction.api.upload_body import BINARY_MEDIA_TYPES, read_upload
from fusou_compaction.handlers.deps import Dependencies, Needs, cold_start, dependencies
from fusou_compaction.keys import TABLE_NAME_RE
from fusou_compaction.logic.auth import Caller, Forbidden, Unauthorized, authenticate
from fusou_compaction.logic.presigned import issue_presigned_upload, maybe_enqueue_realtime
from fusou_compaction.logic.quarantine import act_on_quarantined
from fusou_compaction.logic.redrive import redrive_all
from fusou_compaction.logic.scheduled import claim_and_enqueue
from fusou_compaction.logic.status import dataset_status_body, dlq_status_body
from fusou_compaction.logic.uploads import UploadLimits, ensure_may_write, store_fragment
from fusou_compaction.observability import logger, metrics
from fusou_compaction.pipeline.models import CompactionMessage

# BINARY_MEDIA_TYPES: what the REST API in front of this handler must declare (infra tests check it).
__all__ = ["BINARY_MEDIA_TYPES", "NEEDS", "app", "handler", "openapi_document"]

app = APIGatewayRestResolver(enable_validation=True)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def on_error(exc: Exception) -> Response[Any]:
    return error_response(exc, app)


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


# -- routes ------------------------------------------------------------------------------------


@app.post(
    f"{PREFIX}/upload",
    status_code=201,
    summary="Store one Parquet fragment",
    security=USER,
    tags=["uploads"],
    responses=responses(201, UploadResponse, "the stored fragment", 400, 401, 403, 413, 415, 422),
    description="A file that is readable Parquet but cannot be stored as it is gets 422 with an error naming "
    "the check and details naming the column or the limit: row_count_mismatch, invalid_column_name, "
    "too_many_columns, nesting_too_deep, decode_budget_exceeded (README, Upload limits).",
    # The body is read by hand (raw or multipart), so it is described here, not inferred.
    openapi_extensions={"requestBody": UPLOAD_REQUEST_BODY},
)
def upload(
    dataset_id: Annotated[UUID | None, Query(alias="datasetId", description="raw uploads: the dataset")] = None,
    table: Annotated[str | None, Query(pattern=TABLE_NAME_RE.pattern, description="raw uploads: the table")] = None,
) -> UploadResponse:
    user = _user(_caller())
    deps = _deps()
    target, data = read_upload(app.current_event, dataset_id, table, deps.settings.max_direct_upload_bytes)
    stored = store_fragment(
        deps.catalog,
        deps.store,
        owner_id=user,
        dataset_id=target.dataset_id,
        table=target.table,
        data=data,
        limits=UploadLimits.from_settings(deps.settings),
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
    responses=responses(201, UploadUrlResponse, "a presigned PUT", 400, 401, 403, 413, 422),
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
    responses=responses(202, SanitizeResponse, "enqueued", 400, 401, 403, 404, 422),
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
    responses=responses(202, TriggerResponse, "what was enqueued and what failed", 400, 401, 403, 422),
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
        backoff=s.retry_backoff,
    )
    return TriggerResponse(enqueued=report.enqueued, failed={str(k): v for k, v in report.failed.items()})


@app.get(
    f"{PREFIX}/dlq-status",
    summary="Queue and DLQ depth, recent failures",
    security=ADMIN,
    tags=["operations"],
    responses=responses(200, DlqStatusResponse, "queue depths and recent failures", 401, 403),
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
    responses=responses(200, DatasetStatusResponse, "the dataset", 401, 403, 404, 422),
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
    responses=responses(200, RedriveResponse, "how many messages moved", 400, 401, 403, 422),
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


@app.post(
    f"{PREFIX}/quarantine",
    summary="Re-admit (after a fix) or delete a quarantined fragment",
    security=ADMIN,
    tags=["operations"],
    responses=responses(200, QuarantineActionResponse, "what was done", 400, 401, 403, 404, 409, 422),
)
def quarantine(body: QuarantineAction) -> QuarantineActionResponse:
    _caller(admin_only=True)
    outcome = act_on_quarantined(_deps().catalog, body.fragment_id, body.action)
    return QuarantineActionResponse(
        fragment_id=outcome.fragment_id,
        dataset_id=outcome.dataset_id,
        action=outcome.action,
        changed=outcome.changed,
        compaction_needed=outcome.compaction_needed,
    )


@cache
def openapi_document() -> str:
    configure_openapi(app)
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
