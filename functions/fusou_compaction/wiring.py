"""Builds adapters from settings, once per container. Handlers call these; logic never does."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.transport import PostgresRpc, SupabaseRpc
from fusou_compaction.settings import Settings


class ServiceSecrets(BaseModel):
    """The JSON document stored in Secrets Manager (one secret per stage)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    supabase_url: str | None = None
    supabase_service_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwks_url: str | None = None
    admin_token: SecretStr | None = None


def aws_client(settings: Settings, service: str) -> Any:
    import boto3  # imported on first use: requests refused before any AWS call never pay for it

    return boto3.client(service, region_name=settings.region, endpoint_url=settings.aws_endpoint_url)  # type: ignore[call-overload]


@lru_cache(maxsize=4)
def load_secrets(settings: Settings) -> ServiceSecrets:
    """Direct settings win; otherwise the secret named by FUSOU_SECRETS_ARN (cached 5 minutes by Powertools)."""
    direct = ServiceSecrets(
        supabase_url=settings.supabase_url,
        supabase_service_key=settings.supabase_service_key,
        jwt_secret=settings.jwt_secret,
        jwks_url=settings.jwks_url,
        admin_token=settings.admin_token,
    )
    if settings.secrets_arn is None:
        return direct
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    provider = SecretsProvider(boto3_client=aws_client(settings, "secretsmanager"))
    stored = ServiceSecrets.model_validate(provider.get(settings.secrets_arn, transform="json", max_age=300))
    merged = stored.model_dump() | {k: v for k, v in direct.model_dump().items() if v is not None}
    return ServiceSecrets.model_validate(merged)


@lru_cache(maxsize=4)
def build_catalog(settings: Settings) -> Catalog:
    if settings.catalog_transport == "postgres":
        assert settings.database_url is not None  # checked by Settings
        return Catalog(PostgresRpc(settings.database_url.get_secret_value(), max_size=4))
    secrets = load_secrets(settings)
    if secrets.supabase_url is None or secrets.supabase_service_key is None:
        raise RuntimeError("Supabase URL and service key are missing from settings and the secret")
    return Catalog(SupabaseRpc(secrets.supabase_url, secrets.supabase_service_key.get_secret_value()))
