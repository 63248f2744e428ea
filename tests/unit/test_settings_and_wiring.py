"""Settings are validated once; secrets come from the environment or Secrets Manager."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.settings import Settings
from fusou_compaction.wiring import build_catalog, load_secrets


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
    with pytest.raises(ValidationError, match="FUSOU_SECRETS_ARN"):
        Settings()
    monkeypatch.setenv("FUSOU_SECRETS_ARN", "arn:aws:secretsmanager:us-east-1:123:secret:x")
    assert Settings().secrets_arn


@pytest.mark.parametrize(
    ("name", "value"), [("FUSOU_STAGE", "Prod!"), ("FUSOU_SCHEDULED_CLAIM_LIMIT", "0"), ("FUSOU_BUCKET", "ab")]
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("FUSOU_CATALOG_TRANSPORT", "postgres")
    monkeypatch.setenv("FUSOU_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_secrets_are_read_from_secrets_manager(local_aws: LocalAws) -> None:
    # Given a stage secret in (moto's) Secrets Manager
    sm: Any = boto3.client("secretsmanager", endpoint_url=local_aws.endpoint_url, region_name="us-east-1")
    arn = sm.create_secret(
        Name="dev/fusou",
        SecretString=json.dumps(
            {"supabase_url": "https://p.supabase.co", "supabase_service_key": "svc", "admin_token": "s3cr3t-admin"}
        ),
    )["ARN"]
    settings = Settings(secrets_arn=arn, aws_endpoint_url=local_aws.endpoint_url)
    # When the secrets are loaded, Then the stored values are there and secret values stay masked
    secrets = load_secrets(settings)
    assert secrets.supabase_url == "https://p.supabase.co"
    assert secrets.admin_token is not None and secrets.admin_token.get_secret_value() == "s3cr3t-admin"
    assert "s3cr3t" not in repr(secrets)


def test_postgres_settings_build_a_direct_catalog(database_url: str) -> None:
    catalog = build_catalog(Settings(catalog_transport="postgres", database_url=database_url))
    assert isinstance(catalog.transport, PostgresRpc)
    assert catalog.list_recent_failures() == []
