"""Every knob of the service, validated once at cold start.

Logic never reads ``os.environ``: handlers call :func:`get_settings` once and pass what they
need down. Secrets are either given directly (local stack, tests) or named by a Secrets Manager
ARN and fetched on use, cached at most five minutes (fusou_compaction.wiring). Two secrets, split
by need: the catalog's credentials (every function) and the API's auth material (the API only).

Nothing falls back to a default that only the local stack would use: a deployed function whose
configuration is incomplete stops at cold start naming what is missing (``ConfigurationError``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fusou_compaction.catalog.models import AdmissionPolicy, RetryBackoff
from fusou_compaction.topology import dlq_name, queue_name

MiB = 1024 * 1024
# The issuer of the local stack's dev tokens, which the local stack sets explicitly
# (FUSOU_JWT_ISSUER). Deployed, the issuer is Supabase's: <supabase_url>/auth/v1.
LOCAL_JWT_ISSUER = "fusou-local/auth/v1"


class ConfigurationError(RuntimeError):
    """A function's configuration is incomplete; the message names every missing item."""

    def __init__(self, function: str, missing: list[str]) -> None:
        super().__init__(f"{function} cannot start, its configuration is incomplete: " + "; ".join(missing))
        self.missing = missing


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUSOU_", extra="ignore", frozen=True)

    stage: str = Field("dev", pattern=r"^[a-z][a-z0-9-]{0,20}$")
    region: str = "us-east-1"
    # Set only against a local emulator (moto server); unset in AWS.
    aws_endpoint_url: str | None = None

    bucket: str = Field("dev-kc-compaction-data", min_length=3)
    queue_url: str = ""
    # The low-priority queue the scheduled run feeds (topology.scheduled_queue_name).
    scheduled_queue_url: str = ""
    dlq_url: str = ""
    # The register function's retry queue: the scheduled run hands it stranded presigned uploads.
    register_retry_queue_url: str = ""
    state_machine_arn: str = ""
    alert_topic_arn: str = ""

    # Catalog transport: supabase-py rpc() in AWS, psycopg for local, tests and the pooler.
    catalog_transport: Literal["supabase", "postgres"] = "supabase"
    database_url: SecretStr | None = None
    supabase_url: str | None = None
    supabase_service_key: SecretStr | None = None
    # Deployed: the catalog's credentials (supabase_url, supabase_service_key) come from this
    # secret; every function reads it.
    catalog_secret_arn: str | None = None
    # Deployed: the API's auth material (jwt_secret, jwks_url, admin_token, optional jwt_issuer)
    # comes from this secret; only the API function reads it.
    auth_secret_arn: str | None = None

    jwt_secret: SecretStr | None = None
    # Default: Supabase's JWKS, <supabase_url>/auth/v1/.well-known/jwks.json.
    jwks_url: str | None = None
    # Default: Supabase's issuer, <supabase_url>/auth/v1 (the URL from settings or the catalog
    # secret). Set explicitly only where tokens come from elsewhere (the local stack).
    jwt_issuer: str | None = None
    jwt_audience: str = "authenticated"
    admin_token: SecretStr | None = None

    # Compaction.
    target_file_size: int = Field(128 * MiB, ge=1 * MiB)
    lease_seconds: int = Field(900, ge=30, le=86_400)
    # How long a scheduled claim keeps other triggers off a dataset until its run takes the lease.
    # Under the budget a drained backlog waits in the scheduled queue for hours, so the claim lasts
    # nearly a day: tomorrow's run claims again whatever message was lost.
    claim_seconds: int = Field(20 * 3600, ge=60)
    # What `trigger-scheduled` claims when its body names no limit. The daily run drains the whole
    # backlog (pages of 1,000), whatever this says.
    scheduled_claim_limit: int = Field(10, ge=1, le=1000)
    # The daily run stops claiming with this many seconds of its timeout left (for housekeeping)
    # and continues in a new asynchronous invocation of itself, at most this many times in a row.
    scheduled_drain_reserve_seconds: int = Field(240, ge=10)
    scheduled_page_size: int = Field(1000, ge=1, le=1000)  # claimed and sent at a time
    scheduled_max_continuations: int = Field(24, ge=0)
    # A dataset whose run failed is claimed by the scheduler again only after
    # min(base * 2^(failures in a row - 1), max), and after every dataset that did not fail. With
    # the daily run: the next night for the first five failures, then every 2nd, 3rd, 6th night,
    # then weekly. A manual or realtime trigger runs it at once; a commit resets the count.
    retry_backoff_base_seconds: int = Field(1800, ge=0)
    retry_backoff_max_seconds: int = Field(7 * 86_400, ge=0)
    grace_period_seconds: int = Field(24 * 3600, ge=0)
    orphan_min_age_seconds: int = Field(6 * 3600, ge=0)
    # The inventory sweep (logic/orphans.py) reads the data bucket's S3 Inventory reports from this
    # bucket (unset: no inventory sweep, the daily sweep of touched datasets only), and reconciles
    # the whole bucket with the catalog from a report at most this often.
    inventory_bucket: str = ""
    orphan_reconcile_every_days: int = Field(7, ge=1)
    # A presigned upload still in staging/ this long after it landed lost its S3 event: the
    # scheduled run hands it back to the register function, well before the 2-day expiry.
    staging_min_age_seconds: int = Field(3600, ge=0)
    map_max_concurrency: int = Field(8, ge=1, le=40)
    # The global budget: at most this many Compact invocations at once, account-wide (the Compact
    # function's reserved concurrency is the same number). Scheduled runs leave
    # `high_priority_reserve` of it to manual and realtime ones, which therefore start at once.
    compaction_budget: int = Field(100, ge=1, le=10_000)
    high_priority_reserve: int = Field(10, ge=0)
    # An admission whose run never showed up (StartExecution failed) stops counting after this.
    admission_stale_seconds: int = Field(900, ge=60)
    # A message the budget refuses is sent again with a delay: full jitter over
    # [0, min(max, base * 2^(n-1))] seconds for its n-th deferral (SQS allows at most 900).
    defer_base_seconds: int = Field(5, ge=1)
    defer_max_seconds: int = Field(900, ge=1, le=900)

    # Upload limits. Lambda takes at most 6 MB of event, and API Gateway base64-encodes binary
    # bodies (x 4/3), so ~4.4 MB of Parquet is the most a direct upload can carry; larger files
    # take `upload-url` (presigned PUT, up to 200 MiB).
    max_direct_upload_bytes: int = Field(4_400_000, ge=1)
    max_presigned_upload_bytes: int = Field(200 * MiB, ge=1)
    realtime_fragment_threshold: int = Field(0, ge=0)  # 0 = never enqueue on upload
    # What an upload may be (logic/fragment_checks.py; README "Upload limits"): leaf columns, and
    # decoded Arrow bytes at most max(floor, ratio x the file's size).
    upload_max_columns: int = Field(1000, ge=1)
    upload_decode_ratio: int = Field(64, ge=1)
    upload_decode_floor_bytes: int = Field(64 * MiB, ge=1)

    @model_validator(mode="after")
    def _catalog_is_reachable(self) -> Settings:
        if self.high_priority_reserve >= self.compaction_budget:
            raise ValueError("FUSOU_HIGH_PRIORITY_RESERVE must be less than FUSOU_COMPACTION_BUDGET")
        if self.retry_backoff_max_seconds < self.retry_backoff_base_seconds:
            raise ValueError("FUSOU_RETRY_BACKOFF_MAX_SECONDS must be at least FUSOU_RETRY_BACKOFF_BASE_SECONDS")
        if self.catalog_transport == "postgres" and self.database_url is None:
            raise ValueError("FUSOU_DATABASE_URL is required when FUSOU_CATALOG_TRANSPORT=postgres")
        if (
            self.catalog_transport == "supabase"
            and self.catalog_secret_arn is None
            and (self.supabase_url is None or self.supabase_service_key is None)
        ):
            raise ValueError(
                "FUSOU_SUPABASE_URL and FUSOU_SUPABASE_SERVICE_KEY (or FUSOU_CATALOG_SECRET_ARN) are required "
                "when FUSOU_CATALOG_TRANSPORT=supabase"
            )
        return self

    @property
    def retry_backoff(self) -> RetryBackoff:
        return RetryBackoff(base_seconds=self.retry_backoff_base_seconds, max_seconds=self.retry_backoff_max_seconds)

    @property
    def admission(self) -> AdmissionPolicy:
        return AdmissionPolicy(
            budget=self.compaction_budget,
            reserve=self.high_priority_reserve,
            max_weight=self.map_max_concurrency,
            target_bytes=self.target_file_size,
            stale_seconds=self.admission_stale_seconds,
        )

    @property
    def queue_name(self) -> str:
        return queue_name(self.stage)

    @property
    def dlq_name(self) -> str:
        return dlq_name(self.stage)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
