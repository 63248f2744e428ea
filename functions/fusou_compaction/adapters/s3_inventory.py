"""S3 Inventory reports, read as S3 delivers them (CSV), from the bucket they are delivered to.

The layout, per AWS's "Locating your inventory list", under ``<prefix>/<source bucket>/<inventory id>/``:

- ``YYYY-MM-DDTHH-MMZ/manifest.json``: ``sourceBucket``, ``destinationBucket`` (an ARN),
  ``version`` ("2016-11-30"), ``creationTimestamp`` (ms since the epoch, as a string: when the
  report began listing the bucket), ``fileFormat`` ("CSV"), ``fileSchema`` ("Bucket, Key, Size,
  LastModifiedDate, ETag": the columns, in order) and ``files`` ([{``key``, ``size``,
  ``MD5checksum``}]);
- ``YYYY-MM-DDTHH-MMZ/manifest.checksum``: the MD5 of manifest.json, written after it: a report
  is complete once its checksum is there;
- ``data/<uuid>.csv.gz``: gzip'd CSV, no header row, one row per object, the key URL-encoded
  (a space as ``+``);
- ``hive/dt=YYYY-MM-DD-HH-MM/symlink.txt``: for Athena (not read here).

Reads go through the object-store port (a listing of the report prefix, ranged GETs streamed
through gzip and csv), so a report of any size is read in bounded memory. The local stack writes
reports in this same format (local/inventory.py): this reader is what runs there too.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import quote_plus, unquote_plus

from fusou_compaction.ports.inventory import InventoryFile, InventoryReport
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound, ObjectStore, ObjectStoreError

MANIFEST = "manifest.json"
CHECKSUM = "manifest.checksum"
VERSION = "2016-11-30"
# What our inventory configuration lists (infra: storage.Storage), in S3's column order.
COLUMNS = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag")
REQUIRED_COLUMNS = frozenset({"Key", "LastModifiedDate"})
_REPORT_DIR_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
READ_CHUNK = 8 * 1024 * 1024


class InventoryFormatError(ObjectStoreError):
    """A report this reader cannot use (another format, columns missing, a checksum that differs)."""


def report_folder(created_at: datetime) -> str:
    return created_at.astimezone(UTC).strftime("%Y-%m-%dT%H-%MZ")


def parse_manifest(key: str, data: bytes) -> InventoryReport:
    try:
        m: dict[str, Any] = json.loads(data)
        fmt = m["fileFormat"]
        columns = tuple(c.strip() for c in str(m["fileSchema"]).split(","))
        created_at = datetime.fromtimestamp(int(m["creationTimestamp"]) / 1000, UTC)
        files = tuple(InventoryFile(key=str(f["key"]), size=int(f["size"])) for f in m["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InventoryFormatError(f"{key}: not an S3 Inventory manifest: {exc}") from exc
    if fmt != "CSV":
        raise InventoryFormatError(f"{key}: only CSV inventory reports are read, this one is {fmt}")
    if missing := REQUIRED_COLUMNS - set(columns):
        raise InventoryFormatError(f"{key}: the report lacks the columns {sorted(missing)}")
    return InventoryReport(key=key, created_at=created_at, columns=columns, files=files)


def _time(value: str) -> datetime:
    # "2026-12-04T01:23:45.000Z"
    return datetime.fromisoformat(value).astimezone(UTC)


def parse_rows(stream: BinaryIO, columns: tuple[str, ...]) -> Iterator[ObjectInfo]:
    """The current objects of one gzip'd CSV data file (delete markers and older versions are
    skipped, should the configuration ever list them)."""
    at = {c: i for i, c in enumerate(columns)}
    key, modified = at["Key"], at["LastModifiedDate"]
    size, etag = at.get("Size"), at.get("ETag")
    latest, marker = at.get("IsLatest"), at.get("IsDeleteMarker")
    with io.TextIOWrapper(gzip.GzipFile(fileobj=stream, mode="rb"), encoding="utf-8", newline="") as text:
        for row in csv.reader(text):
            if not row:
                continue
            if (marker is not None and row[marker].lower() == "true") or (
                latest is not None and row[latest].lower() == "false"
            ):
                continue
            yield ObjectInfo(
                key=unquote_plus(row[key]),
                size=int(row[size] or 0) if size is not None else 0,
                last_modified=_time(row[modified]),
                etag=(row[etag].strip('"') or None) if etag is not None else None,
            )


def encode_rows(bucket: str, objects: Iterable[ObjectInfo]) -> bytes:
    """One data file, as S3 writes it (COLUMNS, every field quoted, the key URL-encoded)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for o in objects:
        stamp = (
            o.last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{o.last_modified.microsecond // 1000:03d}Z"
        )
        writer.writerow([bucket, quote_plus(o.key, safe="/"), o.size, stamp, o.etag or ""])
    return gzip.compress(text.getvalue().encode("utf-8"))


def encode_manifest(
    *, source_bucket: str, destination_bucket: str, created_at: datetime, files: list[tuple[str, bytes]]
) -> bytes:
    manifest = {
        "sourceBucket": source_bucket,
        "destinationBucket": f"arn:aws:s3:::{destination_bucket}",
        "version": VERSION,
        "creationTimestamp": str(int(created_at.timestamp() * 1000)),
        "fileFormat": "CSV",
        "fileSchema": ", ".join(COLUMNS),
        "files": [
            {"key": key, "size": len(data), "MD5checksum": hashlib.md5(data, usedforsecurity=False).hexdigest()}
            for key, data in files
        ],
    }
    return json.dumps(manifest, indent=2).encode()


def checksum(manifest: bytes) -> bytes:
    return hashlib.md5(manifest, usedforsecurity=False).hexdigest().encode()


class _RangedObject(io.RawIOBase):
    """One object read front to back by ranged GETs (BufferedReader asks for READ_CHUNK at a time)."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self.store, self.key, self.size, self.pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.size:
            return 0
        want = min(len(buffer), self.size - self.pos)
        data = self.store.get_bytes(self.key, start=self.pos, end=self.pos + want - 1)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class S3InventoryReports:
    """The ``InventoryReports`` port over the reports of one inventory configuration.

    ``store`` is the bucket the reports are delivered to; ``prefix`` is
    ``<destination prefix>/<source bucket>/<inventory id>/``."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def newest(self) -> InventoryReport | None:
        # Reports are kept for days (a lifecycle rule expires them), a few objects each: one listing.
        folders = {
            folder
            for info in self.store.list_objects(self.prefix)
            for folder in [info.key[len(self.prefix) :].split("/", 1)[0]]
            if _REPORT_DIR_RE.fullmatch(folder) and info.key == f"{self.prefix}{folder}/{CHECKSUM}"
        }
        for folder in sorted(folders, reverse=True):
            try:
                return self.report(f"{self.prefix}{folder}/{MANIFEST}")
            except ObjectNotFound:
                continue  # expired between the listing and now
        return None

    def report(self, key: str) -> InventoryReport:
        expected = self.store.get_bytes(key.removesuffix(MANIFEST) + CHECKSUM).strip()
        data = self.store.get_bytes(key)
        if checksum(data) != expected.lower():
            raise InventoryFormatError(f"{key}: its MD5 is not the one in {CHECKSUM}")
        return parse_manifest(key, data)

    def rows(self, report: InventoryReport, file: int) -> Iterator[ObjectInfo]:
        f = report.files[file]
        stream = io.BufferedReader(_RangedObject(self.store, f.key, f.size), buffer_size=READ_CHUNK)
        yield from parse_rows(stream, report.columns)
