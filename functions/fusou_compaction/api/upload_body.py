"""The upload's body: one Parquet file, raw (``?datasetId=&table=``) or in a multipart form
(``datasetId``, ``table``, ``file``) as the original client sends it.

API Gateway hands the whole body over in the event (base64 for the binary media types), so the
form is parsed in memory: python-multipart's streaming parser is fed the bytes once and its
callbacks keep the parts; nothing is spooled to disk.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import ValidationError

from fusou_compaction.api import PREFIX
from fusou_compaction.api.errors import BadRequest, InvalidField, PayloadTooLarge, UnsupportedMediaType
from fusou_compaction.api.models import UploadTarget

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

PARQUET_TYPES = ("application/vnd.apache.parquet", "application/octet-stream")
MULTIPART = "multipart/form-data"
# What the REST API must declare as binary media types, so these bodies arrive base64-encoded.
BINARY_MEDIA_TYPES = (*PARQUET_TYPES, MULTIPART)
FORM_FRAMING_BYTES = 64 * 1024  # room for the form's boundaries and part headers around the file
FILE_FIELD = "file"


def read_upload(
    event: APIGatewayProxyEvent, dataset_id: UUID | None, table: str | None, max_bytes: int
) -> tuple[UploadTarget, bytes]:
    """Where the file goes and its bytes; dataset_id and table are the raw upload's query."""
    content_type = (event.headers.get("content-type") or "").strip()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == MULTIPART:
        form = parse_form(content_type, raw_body(event, max_bytes + FORM_FRAMING_BYTES))
        if form.file is None:
            raise BadRequest(f"the multipart form has no {FILE_FIELD!r} part")
        data = form.file
        target_input: dict[str, Any] = {"datasetId": form.fields.get("datasetId"), "table": form.fields.get("table")}
    elif media_type in PARQUET_TYPES:
        data = raw_body(event, max_bytes)
        target_input = {"datasetId": dataset_id, "table": table}
    else:
        raise UnsupportedMediaType(
            f"send the file as Content-Type {' or '.join(PARQUET_TYPES)} (with ?datasetId=&table=) or as {MULTIPART}"
        )
    if len(data) > max_bytes:
        raise PayloadTooLarge(too_large(max_bytes))
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


def raw_body(event: APIGatewayProxyEvent, max_bytes: int) -> bytes:
    body = event.body or ""
    # base64 inflates by 4/3: refuse before decoding anything that cannot fit.
    limit = max_bytes * 4 // 3 + 4 if event.is_base64_encoded else max_bytes
    if len(body) > limit:
        raise PayloadTooLarge(too_large(max_bytes))
    if not event.is_base64_encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("the body is not valid base64") from exc


def too_large(max_bytes: int) -> str:
    return (
        f"the body is larger than {max_bytes} bytes: request a presigned URL with "
        f"POST {PREFIX}/upload-url for files up to 200 MiB"
    )


@dataclass
class MultipartForm:
    fields: dict[str, str] = field(default_factory=dict)
    file: bytes | None = None


@dataclass
class _Part:
    name: str = ""  # Content-Disposition's name; a part without one is ignored
    chunks: list[bytes] = field(default_factory=list)


def parse_form(content_type: str, body: bytes) -> MultipartForm:
    """The form's text fields and its ``file`` part; a repeated name keeps its last part."""
    # Imported here: only multipart uploads pay its ~10 ms, not every cold start.
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary")
    parts: list[_Part] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    ended = False

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            _, disposition = parse_options_header(bytes(header["value"]))
            parts[-1].name = disposition.get(b"name", b"").decode(errors="replace")
        header["field"].clear()
        header["value"].clear()

    def on_end() -> None:
        nonlocal ended
        ended = True

    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_part_data": lambda data, start, end: parts[-1].chunks.append(data[start:end]),
                "on_header_field": lambda data, start, end: header["field"].extend(data[start:end]),
                "on_header_value": lambda data, start, end: header["value"].extend(data[start:end]),
                "on_header_end": on_header_end,
                "on_end": on_end,
            },
        )
        parser.write(body)
    except FormParserError as exc:
        raise BadRequest(f"the multipart body cannot be parsed: {exc}") from exc
    if not ended:  # the parser streams: a body cut short is only noticed here
        raise BadRequest("the multipart body ends before its closing boundary")
    return _form(parts)


def _form(parts: list[_Part]) -> MultipartForm:
    form = MultipartForm()
    for part in parts:
        if not part.name:
            continue
        payload = b"".join(part.chunks)
        if part.name == FILE_FIELD:
            form.file = payload
            continue
        try:
            form.fields[part.name] = payload.decode()
        except UnicodeDecodeError as exc:
            raise BadRequest(f"form field {part.name!r} is not UTF-8 text") from exc
    return form
