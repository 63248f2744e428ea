"""The object-store port on a local folder: keys are relative paths under ``root``.

Used by the crash-interleaving tests (thousands of runs, where S3 round trips would dominate)
and anywhere the engine works on local files. Writes are atomic (temp file + rename), like an
S3 PUT or a completed multipart upload.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fusou_compaction.engine.sinks import LocalFileWriter
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class LocalObjectStore:
    def __init__(self, root: Path, bucket: str = "local") -> None:
        self.root = Path(root).resolve()
        self.bucket = bucket
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store")
        return path

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream") -> None:
        with LocalFileWriter(self._path(key)) as w:
            w.write(body)

    def put_if_absent(self, key: str, body: bytes, *, content_type: str = "application/octet-stream") -> bool:
        with self._lock:  # If-None-Match: check and write as one step
            if self._path(key).exists():
                return False
            self.put(key, body)
            return True

    def get_bytes(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        if start is not None and start < 0:
            return data[start:]
        return data[(start or 0) : None if end is None else end + 1]

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_many(self, keys: list[str]) -> list[str]:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        return []

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        # Walk only below the prefix's directory part, not the whole store; keys in S3's order.
        start = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        found = sorted(
            key
            for dirpath, _dirs, files in os.walk(start)
            for name in files
            if not name.startswith(".")  # in-progress temp files are not objects
            for key in [str((Path(dirpath) / name).relative_to(self.root))]
        )
        for key in found:
            if key.startswith(prefix) and (start_after is None or key > start_after):
                info = self.head(key)
                if info is not None:
                    yield info

    def open_writer(self, key: str, *, content_type: str = "application/octet-stream") -> LocalFileWriter:
        return LocalFileWriter(self._path(key))

    def filesystem(self) -> pafs.FileSystem:
        import pyarrow.fs as pafs

        return pafs.SubTreeFileSystem(str(self.root), pafs.LocalFileSystem())

    def path_for(self, key: str) -> str:
        return key
