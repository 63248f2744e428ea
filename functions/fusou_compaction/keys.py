"""Object keys. Every key is derived, never taken from a client.

- Fragments are content-addressed under their dataset and table, so a duplicate upload
  writes the same key (and a conditional put refuses to overwrite anything else).
- Compacted outputs live under the run that wrote them, so a retried step overwrites only
  its own output, and orphans of a crashed run are found by run id.
"""

from __future__ import annotations

import re
from uuid import UUID

TABLE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATASETS_PREFIX = "datasets/"
PLANS_PREFIX = "plans/"
STAGING_PREFIX = "staging/"
PLAN_ITEMS = "items.json"  # under a run's plan prefix: the Compact Map's items
MAP_RESULTS = "map-results"  # under a run's plan prefix: the Compact Map's exported results


def check_table_name(table: str) -> str:
    if not TABLE_NAME_RE.fullmatch(table):
        raise ValueError(f"table name {table!r} must match {TABLE_NAME_RE.pattern}")
    return table


def dataset_prefix(dataset_id: UUID) -> str:
    return f"{DATASETS_PREFIX}{dataset_id}/"


def fragment_key(dataset_id: UUID, table: str, sha256: str) -> str:
    check_table_name(table)
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return f"{dataset_prefix(dataset_id)}{table}/fragments/{sha256}.parquet"


def fragment_copy_key(dataset_id: UUID, table: str, sha256: str, copy: UUID) -> str:
    """A fragment's bytes under a key of one upload's own: where the content-addressed key holds
    an object too old to share (an orphan the sweep may be deleting, logic/uploads.py)."""
    return fragment_key(dataset_id, table, sha256).removesuffix(".parquet") + f".{copy}.parquet"


def staging_key(dataset_id: UUID, table: str, upload_id: UUID) -> str:
    """Where a presigned upload lands before it is validated and registered."""
    check_table_name(table)
    return f"{STAGING_PREFIX}{dataset_id}/{table}/{upload_id}.parquet"


def compacted_prefix(dataset_id: UUID, table: str, run_id: UUID) -> str:
    check_table_name(table)
    return f"{dataset_prefix(dataset_id)}{table}/compacted/{run_id}/"


def compacted_key(dataset_id: UUID, table: str, run_id: UUID, part: int) -> str:
    return f"{compacted_prefix(dataset_id, table, run_id)}part-{part:05d}.parquet"


def plan_prefix(run_id: UUID) -> str:
    """Plans and bin manifests of one run (expired by a bucket lifecycle rule)."""
    return f"{PLANS_PREFIX}{run_id}/"


def plan_bin_key(run_id: UUID, table: str, index: int) -> str:
    return f"{plan_prefix(run_id)}bins/{check_table_name(table)}/{index:05d}.json"


def manifest_key(run_id: UUID, table: str, index: int) -> str:
    return f"{plan_prefix(run_id)}results/{check_table_name(table)}/{index:05d}.json"


def plan_items_key(run_id: UUID) -> str:
    """The plan's bins as one JSON array: the Compact Map's items (its ItemReader reads them)."""
    return f"{plan_prefix(run_id)}{PLAN_ITEMS}"


def map_results_prefix(run_id: UUID) -> str:
    """Where the Compact Map's ResultWriter exports its child executions (it appends
    ``/<map run id>/manifest.json`` and the result files)."""
    return f"{plan_prefix(run_id)}{MAP_RESULTS}"


_COMPACTED_RE = re.compile(
    r"^datasets/(?P<dataset>[0-9a-f-]{36})/(?P<table>[a-z][a-z0-9_]{0,62})/compacted/(?P<run>[0-9a-f-]{36})/"
)


def run_id_of_compacted_key(key: str) -> UUID | None:
    m = _COMPACTED_RE.match(key)
    return UUID(m["run"]) if m else None
