"""Infra-only settings in one place. Names and queue settings come from ``fusou_compaction.topology``."""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from fusou_compaction import keys
from fusou_compaction.settings import Settings
from fusou_compaction.topology import REGISTER
from fusou_infra.assets import LAMBDA_PYTHON_VERSION

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
if LAMBDA_RUNTIME.name != f"python{LAMBDA_PYTHON_VERSION}":
    raise RuntimeError("the Lambda runtime and the wheels of `make build` disagree")
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

HANDLERS = "fusou_compaction.handlers"
API_TIMEOUT_SECONDS = 29  # API Gateway's integration limit
API_MEMORY_MB = 1024
REGISTER_TIMEOUT_SECONDS = 300  # a 200 MiB presigned upload is validated and copied
REGISTER_MEMORY_MB = 1769
# Failed registrations: retried every 30 min (>= 6x the function's timeout, as SQS event sources
# need) for a day, well within the staging prefix's 2-day expiry.
REGISTER_RETRY_VISIBILITY_SECONDS = REGISTER.retry_visibility_seconds
REGISTER_RETRY_RECEIVES = REGISTER.retry_receives
REGISTER_ASYNC_RETRIES = REGISTER.async_retries
DLQ_HANDLER_TIMEOUT_SECONDS = 60
# Lambda's longest: the drain claims and enqueues pages of 1,000 until 240 s are left
# (FUSOU_SCHEDULED_DRAIN_RESERVE_SECONDS), then housekeeping; a longer drain continues in a new
# asynchronous invocation.
SCHEDULED_TIMEOUT_SECONDS = 900
LIGHT_MEMORY_MB = 256
STEP_MEMORY_MB = 512
# One full vCPU, the cheapest tier that runs the engine at its floor. The engine encodes on every
# vCPU (engine/stitch.py): 3538 MB (two vCPUs) took 0.55x the time for 1.1x the GB-seconds in
# bench/RESULTS.md, for operators who want bins done sooner (context key compactMemoryMb).
COMPACT_MEMORY_MB = 1769
COMPACT_MEMORY_RANGE_MB = (1024, 10240)  # below 1 GB the Arrow working set (~200 MB) gets tight

# Pipeline function key -> (handler, memory). Timeouts come from the pipeline definition.
STEP_FUNCTIONS: dict[str, tuple[str, int]] = {
    "validate": (f"{HANDLERS}.steps.validate", STEP_MEMORY_MB),
    "get_metadata": (f"{HANDLERS}.steps.get_metadata", STEP_MEMORY_MB),
    "compact": (f"{HANDLERS}.steps.compact", COMPACT_MEMORY_MB),
    "update": (f"{HANDLERS}.steps.update", STEP_MEMORY_MB),
    "record_failure": (f"{HANDLERS}.steps.record_failure", STEP_MEMORY_MB),
}

DEFAULT_MAP_MAX_CONCURRENCY: int = Settings.model_fields["map_max_concurrency"].default
# The global budget: Compact's reserved concurrency and the consumer's admissions (context key
# compactionBudget). Reserved concurrency comes out of the account's pool (1,000 by default, of
# which 100 must stay unreserved): raise the account's quota before raising this past ~800.
DEFAULT_COMPACTION_BUDGET: int = Settings.model_fields["compaction_budget"].default
DEFAULT_HIGH_PRIORITY_RESERVE: int = Settings.model_fields["high_priority_reserve"].default

# API Gateway throttling (per stage; admin routes lower).
API_RATE_LIMIT = 50
API_BURST_LIMIT = 100
ADMIN_RATE_LIMIT = 1
ADMIN_BURST_LIMIT = 2

# Alarm thresholds.
QUEUE_AGE_ALARM_SECONDS = 900  # 15 min unconsumed: the consumer is not consuming
API_5XX_ALARM_COUNT = 1

# Object prefixes of the data bucket (keys.py derives every key under them).
DATASETS_PREFIX = keys.DATASETS_PREFIX
PLANS_PREFIX = keys.PLANS_PREFIX
STAGING_PREFIX = keys.STAGING_PREFIX
PLANS_EXPIRE_DAYS = 7
# Presigned uploads register within seconds; what the event missed, the scheduled run re-sends to
# the register function within a day (FUSOU_STAGING_MIN_AGE_SECONDS); leftovers after that are junk.
STAGING_EXPIRE_DAYS = REGISTER.staging_expire_days
NONCURRENT_EXPIRE_DAYS = 7  # replaced or deleted objects stay recoverable for a week
ABORT_MULTIPART_DAYS = 1
ACCESS_LOG_EXPIRE_DAYS = 90


def resource_name(stage: str, what: str) -> str:
    return f"{stage}-kc-compaction-{what}"
