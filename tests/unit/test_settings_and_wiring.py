"""Settings are validated once; secrets come from the environment or Secrets Manager."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import boto3
import pytest
from pydantic import ValidationError

from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.settings import ConfigurationError, Settings
from fusou_compaction.wiring import SECRET_MAX_AGE_SECONDS, RuntimeConfig, SecretReader, build_catalog


def test_defaults_name_the_queues_as_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSOU_SUPABASE_URL", "https://x.supabase.co")
    monkeypatch.setenv("FUSOU_SUPABASE_SERVICE_KEY", "k")
    s = Settings()
    assert (s.queue_name, s.dlq_name) == ("dev-kc-compaction-queue", "dev-kc-compaction-dlq")
    assert s.scheduled_claim_limit == 10 and s.target_file_size == 128 * 1024 * 1024


def test_postgres_transport_without_a_url_fails_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSOU_CATALOG_TRANSPORT", "postgres")
    with pytest.raises(ValidationError, match="FUSOU_DATABASE_URL"):
        Settings()


def test_supabase_transport_needs_credentials_or_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="FUSOU_CATALOG_SECRET_ARN"):
        Settings()
    monkeypatch.setenv("FUSOU_CATALOG_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123:secret:x")
    assert Settings().catalog_secret_arn


@pytest.mark.parametrize(
    ("name", "value"), [("FUSOU_STAGE", "Prod!"), ("FUSOU_SCHEDULED_CLAIM_LIMIT", "0"), ("FUSOU_BUCKET", "ab")]
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("FUSOU_CATALOG_TRANSPORT", "postgres")
    monkeypatch.setenv("FUSOU_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def _secret(local_aws: LocalAws, name: str, value: dict[str, Any]) -> str:
    sm: Any = boto3.client("secretsmanager", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)
    return sm.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]  # type: ignore[no-any-return]


def test_secrets_are_read_from_secrets_manager(local_aws: LocalAws) -> None:
    # Given a catalog secret and an auth secret in (moto's) Secrets Manager
    catalog_arn = _secret(
        local_aws, f"t/catalog-{uuid4()}", {"supabase_url": "https://p.supabase.co", "supabase_service_key": "svc"}
    )
    auth_arn = _secret(local_aws, f"t/auth-{uuid4()}", {"jwt_secret": "j" * 40, "admin_token": "s3cr3t-admin"})
    config = RuntimeConfig(
        Settings(catalog_secret_arn=catalog_arn, auth_secret_arn=auth_arn, aws_endpoint_url=local_aws.endpoint_url)
    )
    # When they are resolved
    creds, auth = config.catalog_credentials(), config.auth()
    # Then the stored values are there, the issuer and JWKS are Supabase's, secret values stay masked
    assert (creds.url, creds.service_key.get_secret_value()) == ("https://p.supabase.co", "svc")
    assert auth.issuer == "https://p.supabase.co/auth/v1"
    assert auth.jwks_url == "https://p.supabase.co/auth/v1/.well-known/jwks.json"
    assert (auth.admin_token, auth.jwt_secret) == ("s3cr3t-admin", "j" * 40)
    assert "s3cr3t" not in repr(config.catalog_secret()) and "svc" not in repr(creds)


def test_an_explicit_issuer_wins_over_the_supabase_url(local_aws: LocalAws) -> None:
    auth_arn = _secret(local_aws, f"t/auth-{uuid4()}", {"jwt_secret": "j" * 40, "admin_token": "a", "jwt_issuer": "x"})
    settings = Settings(
        catalog_transport="postgres",
        database_url="postgresql://unused",
        supabase_url="https://p.supabase.co",
        auth_secret_arn=auth_arn,
        aws_endpoint_url=local_aws.endpoint_url,
    )
    assert RuntimeConfig(settings).auth().issuer == "x"
    assert RuntimeConfig(settings.model_copy(update={"jwt_issuer": "y"})).auth().issuer == "y"


def test_a_rotated_secret_is_used_within_the_cache_age(local_aws: LocalAws) -> None:
    # Given an auth secret read once through a reader that caches for 1 s (5 minutes deployed)
    sm: Any = boto3.client("secretsmanager", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)
    arn = _secret(local_aws, f"t/auth-{uuid4()}", {"jwt_secret": "j" * 40, "admin_token": "before"})
    settings = Settings(
        catalog_transport="postgres",
        database_url="postgresql://unused",
        jwt_issuer="i",
        auth_secret_arn=arn,
        aws_endpoint_url=local_aws.endpoint_url,
    )
    config = RuntimeConfig(settings, SecretReader(settings, max_age=1))
    assert config.auth().admin_token == "before"
    # When the operator rotates it
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"jwt_secret": "j" * 40, "admin_token": "after"}))
    # Then the cached value serves until the cache age, and the new one after it
    assert config.auth().admin_token == "before"
    time.sleep(1.1)
    assert config.auth().admin_token == "after"


def test_the_deployed_cache_age_is_five_minutes() -> None:
    assert SECRET_MAX_AGE_SECONDS == 300
    assert SecretReader(Settings(catalog_transport="postgres", database_url="postgresql://x")).max_age == 300


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        ({"supabase_url": None}, "the JWT issuer"),
        ({"jwt_secret": None, "jwks_url": None, "supabase_url": None, "jwt_issuer": "i"}, "a way to verify tokens"),
        ({"admin_token": None}, "admin_token"),
    ],
)
def test_incomplete_auth_configuration_names_what_is_missing(changes: dict[str, Any], missing: str) -> None:
    base = Settings(
        catalog_transport="postgres",
        database_url="postgresql://x",
        supabase_url="https://p.supabase.co",
        jwt_secret="j" * 40,
        admin_token="a",
    )
    assert RuntimeConfig(base).auth().issuer == "https://p.supabase.co/auth/v1"
    with pytest.raises(ConfigurationError, match=missing):
        RuntimeConfig(base.model_copy(update=changes)).auth()


def test_postgres_settings_build_a_direct_catalog(database_url: str) -> None:
    catalog = build_catalog(RuntimeConfig(Settings(catalog_transport="postgres", database_url=database_url)))
    assert isinstance(catalog.transport, PostgresRpc)
    assert catalog.list_recent_failures() == []
