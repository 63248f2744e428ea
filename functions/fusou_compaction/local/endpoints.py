"""The endpoints file of a stack: light on purpose (the CLI reads it before loading anything else)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Endpoints:
    """Where a stack's parts are: written by `fusou-compaction dev` for the local stack, or by
    `fusou-compaction endpoints --stack NAME` for a deployed one (from its CloudFormation outputs).

    Deployed, ``aws_endpoint_url`` is None (AWS itself, with the caller's own credentials), the
    catalog is reached through ``catalog_secret_arn`` (supabase-py, as the functions do) or a
    ``database_url`` (Supabase's pooler), and the local-only secrets are absent.
    """

    api_url: str
    region: str
    bucket: str
    queue_url: str
    dlq_url: str
    aws_endpoint_url: str | None = None
    database_url: str | None = None
    catalog_secret_arn: str | None = None
    admin_token: str | None = None
    jwt_secret: str | None = None

    @property
    def local(self) -> bool:
        return self.aws_endpoint_url is not None

    def to_json_dict(self) -> dict[str, str]:
        # Absent rather than null: what a stack does not have is not written.
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def load(cls, path: Path) -> Endpoints:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{path} not found: start the local stack with `fusou-compaction dev`, or write one for a "
                "deployed stack with `fusou-compaction endpoints --stack <name>`"
            ) from exc
        required = ("api_url", "region", "bucket", "queue_url", "dlq_url")
        missing = [k for k in required if k not in data]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
