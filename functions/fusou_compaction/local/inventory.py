"""The stand-in for S3 Inventory, which moto does not run: a report of the data bucket, in S3's
own format and layout (adapters/s3_inventory.py), made by listing the bucket.

This listing is the only one of the whole bucket, and only here: deployed, S3 delivers the report
daily and nothing lists the bucket. The local stack publishes one before each scheduled run, as if
S3 had delivered it overnight; tests publish them where they need one.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from fusou_compaction.adapters.s3_inventory import (
    CHECKSUM,
    MANIFEST,
    checksum,
    encode_manifest,
    encode_rows,
    report_folder,
)
from fusou_compaction.ports.object_store import ObjectStore
from fusou_compaction.topology import inventory_report_prefix

ROWS_PER_FILE = 100_000


def publish_inventory_report(
    source: ObjectStore,
    destination: ObjectStore,
    *,
    created_at: datetime | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> str:
    """List ``source`` and write its report under ``destination``: the data files, the manifest,
    then the checksum that marks it complete. Returns the manifest's key."""
    created_at = (created_at or datetime.now(UTC)).replace(second=0, microsecond=0)
    prefix = inventory_report_prefix(source.bucket)
    objects = source.list_objects("")
    files: list[tuple[str, bytes]] = []
    while chunk := list(itertools.islice(objects, rows_per_file)):
        data = encode_rows(source.bucket, chunk)
        key = f"{prefix}data/{uuid.uuid4()}.csv.gz"
        destination.put(key, data, content_type="application/gzip")
        files.append((key, data))
    folder = f"{prefix}{report_folder(created_at)}/"
    manifest = encode_manifest(
        source_bucket=source.bucket, destination_bucket=destination.bucket, created_at=created_at, files=files
    )
    destination.put(folder + MANIFEST, manifest, content_type="application/json")
    hive = f"{prefix}hive/dt={created_at.strftime('%Y-%m-%d-%H-%M')}/symlink.txt"
    destination.put(hive, "".join(f"s3://{destination.bucket}/{k}\n" for k, _ in files).encode())
    destination.put(folder + CHECKSUM, checksum(manifest))
    return folder + MANIFEST
