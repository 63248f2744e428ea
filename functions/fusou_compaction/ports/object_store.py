"""The object-store port: what logic and the engine need from S3 (or a local folder)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class ObjectStoreError(Exception):
    """Any failure of the object store that is not a plain 'not found' or 'already exists'."""


class ObjectNotFound(ObjectStoreError, KeyError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError would print the repr
        return f"object not found: {self.key}"


class PreconditionFailed(ObjectStoreError):
    """A conditional request (If-None-Match / If-Match) did not hold."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str | None = None


@runtime_checkable
class WritableObject(Protocol):
    """A streaming write to one final key.

    Nothing is visible under the key until ``close()`` succeeds; ``abort()`` (or leaving a
    ``with`` block by an exception) discards everything written so far.
    """

    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def tell(self) -> int: ...
    def flush(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def sha256(self) -> str: ...  # hex digest of everything written (valid after close)


class ObjectStore(Protocol):
    bucket: str

    def put_if_absent(self, key: str, body: bytes, *, content_type: str = ...) -> bool:
        """Write ``body`` unless the key exists; True if this call created it."""
        ...

    def put(self, key: str, body: bytes, *, content_type: str = ...) -> None: ...
    def get_bytes(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def exists(self, key: str) -> bool: ...
    def delete_many(self, keys: list[str]) -> list[str]:
        """Delete keys (missing ones are fine); returns the keys that could not be deleted."""
        ...

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order (as S3 lists them), after ``start_after`` if given."""
        ...

    def open_writer(self, key: str, *, content_type: str = ...) -> WritableObject: ...
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem that reads this store; paths are ``f"{bucket}/{key}"``."""
        ...

    def path_for(self, key: str) -> str: ...
