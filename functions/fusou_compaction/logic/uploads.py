"""Storing one fragment: validate it is Parquet, write the object, then register it.

Object first, catalog row second: a crash between them leaves an unregistered object (no
visible fragment), which the scheduled sweep removes as an orphan. The key is content-addressed
under the caller's dataset, so nothing can overwrite another object.

An object already under the key is shared only while it is young (a concurrent upload of the same
bytes). An older one is an orphan of an upload whose registration failed: the orphan sweep may
have judged it (no catalog row) and be about to delete it, and registering it now would leave a
live fragment without its object. Such bytes are written again under a key of this upload's own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, DatasetForbidden
from fusou_compaction.logic.fragment_checks import InvalidParquet, NotParquet, UploadLimits, check_fragment
from fusou_compaction.ports.object_store import ObjectStore

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
# An object under a fragment's key younger than this is shared (a concurrent upload of the same
# bytes: registration follows within seconds); older, it may be an orphan the sweep is deleting,
# which only ever deletes objects older than FUSOU_ORPHAN_MIN_AGE_SECONDS (6 h).
SHARE_MAX_AGE = timedelta(hours=1)

__all__ = [
    "InvalidParquet",
    "NotParquet",
    "ParquetSummary",
    "StoredFragment",
    "UploadLimits",
    "ensure_may_write",
    "inspect_parquet",
    "store_fragment",
]


@dataclass(frozen=True)
class ParquetSummary:
    rows: int
    schema_fingerprint: str
    columns: int
    arrow_schema: str  # base64 Arrow IPC, recorded by fingerprint for the Compact step


@dataclass(frozen=True)
class StoredFragment:
    dataset_id: UUID
    table: str
    fragment_id: UUID
    size_bytes: int
    row_count: int
    sha256: str
    duplicate: bool
    dataset_created: bool

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "datasetId": str(self.dataset_id),
            "table": self.table,
            "fragmentId": str(self.fragment_id),
            "sizeBytes": self.size_bytes,
            "rowCount": self.row_count,
            "sha256": self.sha256,
            "duplicate": self.duplicate,
        }


def inspect_parquet(data: bytes, limits: UploadLimits | None = None) -> ParquetSummary:
    """What the catalog records of a fragment, once it passed every upload check
    (logic/fragment_checks.py); raises NotParquet or an InvalidParquet naming what is wrong."""
    # pyarrow is imported here so that routes which never see Parquet do not pay for it.
    from fusou_compaction.engine.schema import schema_fingerprint, schema_to_base64

    facts = check_fragment(data, limits or UploadLimits())
    schema = facts.schema
    return ParquetSummary(facts.rows, schema_fingerprint(schema), len(schema), schema_to_base64(schema))


def ensure_may_write(catalog: Catalog, dataset_id: UUID, owner_id: UUID) -> bool:
    """True if the dataset exists (and is the caller's); raises DatasetForbidden if it is another's."""
    try:
        ds = catalog.get_dataset(dataset_id)
    except CatalogNotFound:
        return False
    if ds.owner_id != owner_id:
        raise DatasetForbidden(f"dataset {dataset_id} belongs to another user")
    return True


def store_fragment(
    catalog: Catalog,
    store: ObjectStore,
    *,
    owner_id: UUID,
    dataset_id: UUID,
    table: str,
    data: bytes,
    limits: UploadLimits | None = None,
    now: datetime | None = None,
) -> StoredFragment:
    keys.check_table_name(table)
    summary = inspect_parquet(data, limits)
    # Checked before the write so that nobody can put bytes under another user's prefix;
    # register_fragment checks again, atomically.
    exists = ensure_may_write(catalog, dataset_id, owner_id)
    sha = hashlib.sha256(data).hexdigest()
    # Bytes the catalog already knows are never written again: once compacted, their object is
    # deleted after the grace period, and writing it back would leave an object no sweep deletes.
    known = catalog.find_fragment(dataset_id, table, sha) if exists else None
    if known is not None:
        return StoredFragment(
            dataset_id=dataset_id,
            table=table,
            fragment_id=known.id,
            size_bytes=known.size_bytes,
            row_count=known.row_count,
            sha256=sha,
            duplicate=True,
            dataset_created=False,
        )
    key = keys.fragment_key(dataset_id, table, sha)
    # Same bytes → same key: an existing object is already exactly these bytes.
    if not store.put_if_absent(key, data, content_type=PARQUET_CONTENT_TYPE):
        found = store.head(key)
        if found is None or found.last_modified < (now or datetime.now(UTC)) - SHARE_MAX_AGE:
            key = keys.fragment_copy_key(dataset_id, table, sha, uuid4())
            store.put(key, data, content_type=PARQUET_CONTENT_TYPE)
    # The schema before the fragment: a fragment the planner sees normally has its schema known.
    catalog.register_schemas({summary.schema_fingerprint: summary.arrow_schema})
    reg = catalog.register_fragment(
        dataset_id=dataset_id,
        owner_id=owner_id,
        table=table,
        object_key=key,
        size_bytes=len(data),
        row_count=summary.rows,
        sha256=sha,
        schema_fingerprint=summary.schema_fingerprint,
    )
    if reg.duplicate and reg.object_key != key and key != keys.fragment_key(dataset_id, table, sha):
        store.delete_many([key])  # our own copy, and another upload registered these bytes first
    return StoredFragment(
        dataset_id=dataset_id,
        table=table,
        fragment_id=reg.id,
        size_bytes=reg.size_bytes,
        row_count=reg.row_count,
        sha256=sha,
        duplicate=reg.duplicate,
        dataset_created=reg.dataset_created,
    )
