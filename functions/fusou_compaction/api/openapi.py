"""What the OpenAPI document says beyond the type hints: security schemes, error responses and
the upload's hand-read body."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel

from fusou_compaction.api.errors import ErrorBody
from fusou_compaction.api.upload_body import MULTIPART, PARQUET_TYPES
from fusou_compaction.keys import TABLE_NAME_RE

USER: list[dict[str, list[str]]] = [{"supabaseJwt": []}]
OWNER_OR_ADMIN: list[dict[str, list[str]]] = [{"supabaseJwt": []}, {"adminToken": []}]
ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]

ERROR_DESCRIPTIONS = {
    400: "bad body (empty, not JSON, broken multipart)",
    401: "no or bad credential",
    403: "not yours (or not an admin)",
    404: "unknown dataset (or fragment)",
    409: "the fragment is no longer live (deleted or compacted)",
    413: "too large",
    415: "not Parquet, or an unsupported Content-Type",
    422: "invalid field",
}

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


def responses(status: int, model: type[BaseModel], description: str, *errors: int) -> dict[int, Any]:
    # Given explicitly, Powertools documents only these: the success one first, then the errors.
    out: dict[int, Any] = {status: {"description": description, "content": {"application/json": {"model": model}}}}
    for code in errors:
        out[code] = {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"model": ErrorBody}}}
    return out


def configure_openapi(app: APIGatewayRestResolver) -> None:
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
