"""Presigned uploads: the ticket, the signed PUT, and registering what landed in ``staging/``.

``upload-url`` writes a ticket next to the staging key (who asked, for which dataset and table,
size and SHA-256) and hands out a PUT signed for exactly that length and checksum. When the object
lands, this handler runs the same validation and registration as a direct upload
(:func:`store_fragment`), then removes the staging object and its ticket.

An invalid object (no ticket, wrong size or checksum, not Parquet, another user's dataset) is
deleted and recorded as a failure (``source="workflow"``, step ``RegisterUpload``), so it shows up
in ``dlq-status`` next to compaction failures, plus a log line and an ``InvalidUploads`` metric.
Transient errors (S3, catalog) raise: S3 invokes asynchronously and Lambda retries twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, cast
from urllib.parse import quote_plus
from uuid import UUID, uuid4

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import DatasetForbidden, InvalidCatalogArgument
from fusou_compaction.handlers.deps import Dependencies
from fusou_compaction.logic.uploads import NotParquet, StoredFragment, UploadLimits, store_fragment
from fusou_compaction.observability import logger, metrics
from fusou_compaction.pipeline.models import CompactionMessage
from fusou_compaction.ports.messaging import BatchEntry, Queue
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound, ObjectStore
from fusou_compaction.settings import Settings

REGISTER_STEP = "RegisterUpload"
PRESIGN_SECONDS = 900
STAGING_KEY_RE = re.compile(
    r"^staging/(?P<dataset>[0-9a-f-]{36})/(?P<table>[a-z][a-z0-9_]{0,62})/(?P<upload>[0-9a-f-]{36})\.parquet$"
)


class Presigner(Protocol):
    # S3ObjectStore has it; the ObjectStore port does not (yet).
    def presign_put(
        self,
        key: str,
        *,
        max_bytes: int,
        expires_in: int = ...,
        checksum_sha256_b64: str | None = ...,
        content_type: str | None = ...,
    ) -> dict[str, Any]: ...


class UploadTicket(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    upload_id: UUID
    owner_id: UUID
    dataset_id: UUID
    table: str
    size_bytes: int
    sha256: str
    expires_at: datetime


@dataclass(frozen=True)
class PresignedUpload:
    ticket: UploadTicket
    key: str
    url: str
    method: str
    headers: dict[str, str]


@dataclass(frozen=True)
class RegisterOutcome:
    key: str
    status: Literal["registered", "duplicate", "rejected", "ignored", "gone"]
    reason: str | None = None
    fragment: StoredFragment | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "reason": self.reason,
            "fragment": self.fragment.to_json_dict() if self.fragment else None,
        }


def ticket_key(staging_key: str) -> str:
    # Not ".parquet": the bucket notification filters on that suffix, so tickets never trigger us.
    return staging_key.removesuffix(".parquet") + ".ticket.json"


def issue_presigned_upload(
    store: ObjectStore,
    *,
    owner_id: UUID,
    dataset_id: UUID,
    table: str,
    size_bytes: int,
    sha256_hex: str,
    expires_in: int = PRESIGN_SECONDS,
    now: datetime | None = None,
) -> PresignedUpload:
    upload_id = uuid4()
    key = keys.staging_key(dataset_id, table, upload_id)
    ticket = UploadTicket(
        upload_id=upload_id,
        owner_id=owner_id,
        dataset_id=dataset_id,
        table=table,
        size_bytes=size_bytes,
        sha256=sha256_hex,
        expires_at=(now or datetime.now(UTC)) + timedelta(seconds=expires_in),
    )
    # Ticket first: an object that lands without one is rejected.
    store.put(ticket_key(key), ticket.model_dump_json(by_alias=True).encode(), content_type="application/json")
    signed = cast(Presigner, store).presign_put(
        key,
        max_bytes=size_bytes,
        expires_in=expires_in,
        checksum_sha256_b64=base64.b64encode(bytes.fromhex(sha256_hex)).decode(),
    )
    return PresignedUpload(
        ticket=ticket, key=key, url=signed["url"], method=signed["method"], headers=dict(signed["headers"])
    )


def maybe_enqueue_realtime(catalog: Catalog, queue: Queue, settings: Settings, stored: StoredFragment) -> str | None:
    """Enqueue a realtime compaction each time a dataset's live fragments reach a multiple of the threshold.

    Best effort: the fragment is stored either way and the dataset stays ``compaction_needed``,
    so a failed send only delays compaction until the next trigger.
    """
    threshold = settings.realtime_fragment_threshold
    if threshold <= 0 or stored.duplicate:
        return None
    try:
        live = catalog.get_dataset(stored.dataset_id).live_fragments
        if live < threshold or live % threshold:
            return None
        body = CompactionMessage(dataset_id=stored.dataset_id, priority="realtime").model_dump_json(by_alias=True)
        message_id = queue.send(body)
    except Exception:
        logger.warning("realtime enqueue failed", extra={"datasetId": str(stored.dataset_id)}, exc_info=True)
        return None
    logger.info("realtime compaction enqueued", extra={"datasetId": str(stored.dataset_id), "fragments": live})
    return message_id


def _reject(
    deps: Dependencies, key: str, reason: str, *, dataset_id: UUID | None, ticket: str | None
) -> RegisterOutcome:
    deps.store.delete_many([key, ticket_key(key)])
    deps.catalog.record_failure(
        source="workflow",
        error=f"upload rejected: {reason}",
        message_id=f"register:{key}",
        dataset_id=dataset_id,
        error_step=REGISTER_STEP,
        body=ticket or json.dumps({"key": key}),
    )
    metrics.add_metric(name="InvalidUploads", unit=MetricUnit.Count, value=1)
    logger.warning("presigned upload rejected", extra={"key": key, "reason": reason})
    return RegisterOutcome(key, "rejected", reason)


class Rejected(Exception):
    pass


def _read_checked(deps: Dependencies, key: str, m: re.Match[str], size: int) -> tuple[UploadTicket, bytes]:
    """The ticket and the bytes, if they are what upload-url promised; raises Rejected otherwise."""
    try:
        ticket = UploadTicket.model_validate_json(deps.store.get_bytes(ticket_key(key)).decode())
    except (KeyError, ValidationError, UnicodeDecodeError) as exc:  # ObjectNotFound is a KeyError
        raise Rejected("no valid upload ticket") from exc
    if (str(ticket.dataset_id), ticket.table, str(ticket.upload_id)) != (m["dataset"], m["table"], m["upload"]):
        raise Rejected("ticket does not match the key")
    if size != ticket.size_bytes or size > deps.settings.max_presigned_upload_bytes:
        raise Rejected(f"size {size} is not the declared {ticket.size_bytes}")
    data = deps.store.get_bytes(key)
    if hashlib.sha256(data).hexdigest() != ticket.sha256:
        raise Rejected("SHA-256 differs from the declared one")
    return ticket, data


def register_staged_upload(deps: Dependencies, key: str) -> RegisterOutcome:
    m = STAGING_KEY_RE.fullmatch(key)
    if m is None:
        return RegisterOutcome(key, "ignored", "not a staging key")
    info = deps.store.head(key)
    if info is None:  # a redelivered event for an object we already handled
        return RegisterOutcome(key, "gone")
    dataset_id = UUID(m["dataset"])
    raw_ticket: str | None = None
    try:
        ticket, data = _read_checked(deps, key, m, info.size)
        raw_ticket = ticket.model_dump_json(by_alias=True)
        stored = store_fragment(
            deps.catalog,
            deps.store,
            owner_id=ticket.owner_id,
            dataset_id=dataset_id,
            table=ticket.table,
            data=data,
            limits=UploadLimits.from_settings(deps.settings),
        )
    except ObjectNotFound:
        if deps.store.head(key) is None:  # handled meanwhile by another delivery (the sweep's, a retry)
            return RegisterOutcome(key, "gone")
        raise
    except (Rejected, NotParquet, DatasetForbidden, InvalidCatalogArgument, ValueError) as exc:
        if isinstance(exc, Rejected) and deps.store.head(key) is None:
            return RegisterOutcome(key, "gone")  # its ticket went with it: handled by another delivery
        return _reject(deps, key, str(exc), dataset_id=dataset_id, ticket=raw_ticket)
    deps.store.delete_many([key, ticket_key(key)])
    maybe_enqueue_realtime(deps.catalog, deps.queue, deps.settings, stored)
    metrics.add_metric(name="FragmentsUploaded", unit=MetricUnit.Count, value=1)
    return RegisterOutcome(key, "duplicate" if stored.duplicate else "registered", fragment=stored)


STRANDED_CONDITION = "StrandedUpload"


@dataclass
class StrandedReport:
    """What the scheduled run found in ``staging/`` and handed back to the register function."""

    resent: list[str] = field(default_factory=list)
    left_young: int = 0
    errors: list[str] = field(default_factory=list)


def stranded_upload_record(bucket: str, region: str, info: ObjectInfo, *, now: datetime) -> str:
    """What Lambda sends the register-retry queue when an S3 event's invocation fails for good (the
    on-failure destination's record), for an upload whose event was lost: its S3 event again."""
    age = int((now - info.last_modified).total_seconds())
    event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": info.last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "fusou-compaction:scheduled"},
                "requestParameters": {"sourceIPAddress": "s3.amazonaws.com"},
                "responseElements": {"x-amz-request-id": "stranded-upload", "x-amz-id-2": "stranded-upload"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "stranded-upload-sweep",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "fusou-compaction"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    # As S3 writes keys in its events (the handler unquotes them).
                    "object": {
                        "key": quote_plus(info.key, safe="/"),
                        "size": info.size,
                        "eTag": (info.etag or "").strip('"'),
                    },
                },
            }
        ]
    }
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": now.astimezone(UTC).isoformat(),
            "requestContext": {"requestId": str(uuid4()), "condition": STRANDED_CONDITION, "approximateInvokeCount": 0},
            "requestPayload": event,
            "responsePayload": {
                "errorType": STRANDED_CONDITION,
                "errorMessage": f"still in staging/ {age} s after it landed: its S3 event was never registered",
            },
        }
    )


def resend_stranded_uploads(
    deps: Dependencies, *, min_age: timedelta, now: datetime | None = None, max_objects: int = 1000
) -> StrandedReport:
    """Hand every presigned upload still in ``staging/`` after ``min_age`` back to the register
    function, through its retry queue, as Lambda does with an event that failed.

    An object stays in staging only until it is registered or rejected, so one still there this long
    after it landed lost its S3 event (the catalog was down through Lambda's retries and the retry
    queue's day, or the event never came). The register function validates it as the event would
    have: a valid upload becomes a fragment once whoever delivers it first (a second delivery finds
    it gone, or a duplicate by content), an invalid one is rejected and recorded. Run daily, this
    reaches every upload well within the staging prefix's 2-day expiry. Younger objects are left to
    their event."""
    if deps.register_retry is None:
        raise RuntimeError("no register-retry queue is configured (FUSOU_REGISTER_RETRY_QUEUE_URL)")
    report = StrandedReport()
    now = now or datetime.now(UTC)
    cutoff = now - min_age
    stranded: list[ObjectInfo] = []
    for info in deps.store.list_objects(keys.STAGING_PREFIX):
        if STAGING_KEY_RE.fullmatch(info.key) is None:
            continue  # tickets, and anything else that is not an upload
        if info.last_modified > cutoff:
            report.left_young += 1
        elif len(stranded) < max_objects:
            stranded.append(info)
    for start in range(0, len(stranded), 10):
        chunk = {str(i): info for i, info in enumerate(stranded[start : start + 10])}
        entries = [
            BatchEntry(id=i, body=stranded_upload_record(deps.store.bucket, deps.settings.region, info, now=now))
            for i, info in chunk.items()
        ]
        result = deps.register_retry.send_batch(entries)
        report.resent.extend(chunk[i].key for i in result.sent)
        report.errors.extend(f"{chunk[i].key}: {reason}" for i, reason in result.failed.items())
    if report.resent:
        metrics.add_metric(name="StrandedUploadsResent", unit=MetricUnit.Count, value=len(report.resent))
        logger.warning(
            "presigned uploads whose S3 event was lost were sent to the register function again",
            extra={"keys": report.resent},
        )
    return report
