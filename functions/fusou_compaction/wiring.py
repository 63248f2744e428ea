"""Builds adapters from settings and the secrets they name. Handlers call these; logic never does.

Deployed, two secrets hold what must not sit in a function's environment, split by need:
- the catalog secret (``supabase_url``, ``supabase_service_key``), read by every function;
- the auth secret (``jwt_secret``, ``jwks_url``, ``admin_token``, optional ``jwt_issuer``), read by
  the API function only: nothing that parses users' files can mint a token or act as admin.

Secrets are read through Powertools' provider and cached at most ``SECRET_MAX_AGE_SECONDS``: a
rotated value is in use within five minutes, without a redeploy or a cold start. Values given
directly in settings (local stack, tests) win over the secrets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from fusou_compaction.logic.auth import AuthConfig

SECRET_MAX_AGE_SECONDS = 300
# Supabase serves its signing keys and names itself in tokens under the project URL.
SUPABASE_AUTH_PATH = "/auth/v1"
SUPABASE_JWKS_PATH = "/auth/v1/.well-known/jwks.json"


class CatalogSecret(BaseModel):
    """The JSON document of the catalog secret (``<stage>/kc-compaction/catalog``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    supabase_url: str | None = None
    supabase_service_key: SecretStr | None = None


class AuthSecret(BaseModel):
    """The JSON document of the API's auth secret (``<stage>/kc-compaction/api-auth``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jwt_secret: SecretStr | None = None
    jwks_url: str | None = None
    admin_token: SecretStr | None = None
    jwt_issuer: str | None = None


@dataclass(frozen=True)
class CatalogCredentials:
    url: str
    service_key: SecretStr


def aws_client(settings: Settings, service: str) -> Any:
    import boto3  # imported on first use: requests refused before any AWS call never pay for it

    return boto3.client(service, region_name=settings.region, endpoint_url=settings.aws_endpoint_url)  # type: ignore[call-overload]


class SecretReader:
    """JSON secrets from Secrets Manager, each cached at most ``max_age`` seconds (Powertools)."""

    def __init__(self, settings: Settings, *, max_age: int = SECRET_MAX_AGE_SECONDS) -> None:
        self._settings = settings
        self.max_age = max_age
        self._provider: Any = None
        self._lock = threading.Lock()

    def read(self, arn: str) -> Any:
        with self._lock:
            if self._provider is None:
                from aws_lambda_powertools.utilities.parameters import SecretsProvider

                self._provider = SecretsProvider(boto3_client=aws_client(self._settings, "secretsmanager"))
            provider = self._provider
        return provider.get(arn, transform="json", max_age=self.max_age)


class RuntimeConfig:
    """Settings plus the secrets they name, resolved on each use (the reader caches)."""

    def __init__(self, settings: Settings, reader: SecretReader | None = None) -> None:
        self.settings = settings
        self._reader = reader or SecretReader(settings)

    def _secret(self, arn: str | None, model: type[BaseModel], what: str) -> Any:
        if arn is None:
            return model()
        try:
            return model.model_validate(self._reader.read(arn))
        except ValidationError as exc:
            raise ConfigurationError(
                what, [f"the secret {arn} is not a JSON object of {model.__name__}: {exc}"]
            ) from exc

    def catalog_secret(self) -> CatalogSecret:
        s = self.settings
        stored: CatalogSecret = self._secret(s.catalog_secret_arn, CatalogSecret, "the catalog")
        return CatalogSecret(
            supabase_url=s.supabase_url or stored.supabase_url,
            supabase_service_key=s.supabase_service_key or stored.supabase_service_key,
        )

    def catalog_credentials(self) -> CatalogCredentials:
        secret = self.catalog_secret()
        missing = [
            f"{name} (FUSOU_{name.upper()}, or {name} in the catalog secret {self.settings.catalog_secret_arn})"
            for name, value in (
                ("supabase_url", secret.supabase_url),
                ("supabase_service_key", secret.supabase_service_key),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError("the catalog", missing)
        assert secret.supabase_url is not None and secret.supabase_service_key is not None
        return CatalogCredentials(secret.supabase_url, secret.supabase_service_key)

    def supabase_url(self) -> str | None:
        """The Supabase project URL, if any is configured (settings, then the catalog secret)."""
        if self.settings.supabase_url:
            return self.settings.supabase_url
        if self.settings.catalog_secret_arn is None:
            return None
        return self.catalog_secret().supabase_url

    def auth(self) -> AuthConfig:
        """What the API verifies callers with; raises ConfigurationError naming what is missing."""
        from fusou_compaction.logic.auth import AuthConfig

        s = self.settings
        stored: AuthSecret = self._secret(s.auth_secret_arn, AuthSecret, "the API's auth")
        project = (self.supabase_url() or "").rstrip("/") or None
        issuer = s.jwt_issuer or stored.jwt_issuer or (project + SUPABASE_AUTH_PATH if project else None)
        jwks_url = s.jwks_url or stored.jwks_url or (project + SUPABASE_JWKS_PATH if project else None)
        jwt_secret = s.jwt_secret or stored.jwt_secret
        admin_token = s.admin_token or stored.admin_token
        where = f"the auth secret {s.auth_secret_arn}" if s.auth_secret_arn else "settings"
        missing = []
        if issuer is None:
            missing.append(
                "the JWT issuer (FUSOU_JWT_ISSUER, or supabase_url in the catalog secret, which gives "
                "<supabase_url>/auth/v1)"
            )
        if jwt_secret is None and jwks_url is None:
            missing.append(f"a way to verify tokens (jwt_secret or jwks_url in {where}, or supabase_url)")
        if admin_token is None:
            missing.append(f"admin_token (in {where}, or FUSOU_ADMIN_TOKEN)")
        if missing:
            raise ConfigurationError("the API", missing)
        assert issuer is not None
        return AuthConfig(
            jwt_secret=jwt_secret.get_secret_value() if jwt_secret else None,
            jwks_url=jwks_url,
            issuer=issuer,
            audience=s.jwt_audience,
            admin_token=admin_token.get_secret_value() if admin_token else None,
        )


def build_catalog(config: RuntimeConfig) -> Catalog:
    """The catalog over its configured transport. Supabase's key is looked up on every call (from
    the reader's cache), so a rotated service key is picked up without a cold start."""
    from fusou_compaction.catalog.transport import PostgresRpc, SupabaseRpc

    settings = config.settings
    if settings.catalog_transport == "postgres":
        assert settings.database_url is not None  # checked by Settings
        return Catalog(PostgresRpc(settings.database_url.get_secret_value(), max_size=4))
    config.catalog_credentials()  # fail now, naming what is missing, rather than on the first call

    def credentials() -> tuple[str, str]:
        c = config.catalog_credentials()
        return c.url, c.service_key.get_secret_value()

    return Catalog(SupabaseRpc(credentials=credentials))
