"""A local-folder implementation of WritableObject, for the CLI, the bench and tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


class LocalFileWriter:
    """Writes to a hidden temp file beside the final path; ``close`` renames it into place."""

    def __init__(self, final_path: Path) -> None:
        self.final_path = final_path
        final_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = final_path.with_name(f".{final_path.name}.{uuid.uuid4().hex}.tmp")
        self._file: BinaryIO = self._tmp.open("wb")
        self._hash = hashlib.sha256()
        self._pos = 0
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed object")
        n = self._file.write(data)
        self._hash.update(data)
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._file.close()
        os.replace(self._tmp, self.final_path)  # atomic: readers see all of it or nothing
        self._closed = True

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __enter__(self) -> LocalFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class LocalDirSink:
    """``open_output`` for compact_bin that writes ``name`` under one folder.

    Remembers what it committed, so a caller can remove a failed run's finished outputs.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.opened: list[LocalFileWriter] = []

    def __call__(self, name: str) -> LocalFileWriter:
        writer = LocalFileWriter(self.directory / name)
        self.opened.append(writer)
        return writer

    def discard_all(self) -> None:
        for w in self.opened:
            w.abort()
            if w.closed:
                w.final_path.unlink(missing_ok=True)


def open_local_output(directory: str | os.PathLike[str]) -> LocalDirSink:
    return LocalDirSink(directory)
