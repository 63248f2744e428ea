"""Objects of the local stack's bucket kept on disk, so `dev --data-dir D` resumes with them.

moto holds S3 in memory. Every object written to a kept bucket is also written under ``D/s3``
before S3's answer goes back (write-through: a ``kill -9`` loses no acknowledged object), every
delete removes it, and a new stack on the same ``D`` loads them into moto before it serves
anything, with their original last-modified times (the orphan sweep and the staging sweep go by
age). One file per object, named by the SHA-256 of its key: a JSON header line (key, size,
last-modified), then the bytes; written to a temporary name and renamed, so a file is whole or
absent. Multipart uploads in progress and object metadata (content type, tags) are not kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.s3.models import S3Backend, s3_backends

from fusou_compaction.observability import logger


def moto_s3_backend() -> S3Backend:
    """The in-process backend moto's server answers from (credentials ``test`` map to its default account)."""
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


class KeptBucket:
    def __init__(self, root: Path, bucket: str) -> None:
        self.bucket = bucket
        self.dir = root / bucket
        self._locks = [threading.Lock() for _ in range(64)]
        self._backend: S3Backend | None = None

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.dir / digest[:2] / digest

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]

    def _write(self, key: str, value: bytes, last_modified: datetime) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"key": key, "size": len(value), "lastModified": last_modified.replace(tzinfo=UTC).isoformat()}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        with tmp.open("wb") as f:
            f.write(json.dumps(header).encode() + b"\n")
            f.write(value)
        os.replace(tmp, path)

    def _entries(self) -> Iterator[tuple[str, bytes, datetime]]:
        for path in sorted(self.dir.glob("??/*")):
            if path.name.startswith("."):  # a write the kill interrupted: never acknowledged
                path.unlink(missing_ok=True)
                continue
            with path.open("rb") as f:
                header = json.loads(f.readline())
                value = f.read()
            if len(value) != header["size"]:
                logger.warning("a kept object is damaged and was skipped", extra={"key": header["key"]})
                continue
            yield header["key"], value, datetime.fromisoformat(header["lastModified"])

    def restore(self, backend: S3Backend) -> int:
        """Load every kept object into moto (no notification: their events fired when they landed)."""
        n = 0
        for key, value, last_modified in self._entries():
            fake = backend.put_object(self.bucket, key, value, disable_notification=True)
            fake.last_modified = last_modified.astimezone(UTC).replace(tzinfo=None)  # moto keeps naive UTC
            n += 1
        return n

    def install(self, backend: S3Backend) -> None:
        """Write through from now on: wrap this backend's put and delete (moto's multipart completion
        and copy call its put_object too)."""
        put, delete = backend.put_object, backend.delete_object

        def put_object(bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != self.bucket:
                return put(bucket_name, key_name, value, *args, **kwargs)
            with self._lock(key_name):
                fake = put(bucket_name, key_name, value, *args, **kwargs)
                self._write(key_name, bytes(value), fake.last_modified)
            return fake

        def delete_object(bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != self.bucket:
                return delete(bucket_name, key_name, *args, **kwargs)
            with self._lock(key_name):
                result = delete(bucket_name, key_name, *args, **kwargs)
                if result[0]:
                    self._path(key_name).unlink(missing_ok=True)
            return result

        backend.put_object = put_object  # type: ignore[method-assign]
        backend.delete_object = delete_object  # type: ignore[method-assign]
        self._backend = backend

    def uninstall(self) -> None:
        if self._backend is not None:
            for name in ("put_object", "delete_object"):
                with contextlib.suppress(AttributeError):
                    delattr(self._backend, name)
            self._backend = None
