"""The HTTPS API's parts beside its routes (``handlers/api.py``): models, error mapping, the
OpenAPI description and reading upload bodies."""

from __future__ import annotations

PREFIX = "/api/compaction"
