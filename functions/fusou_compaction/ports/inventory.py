"""The inventory port: reports that list every object of the data bucket (S3 Inventory), read
instead of listing the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fusou_compaction.ports.object_store import ObjectInfo


@dataclass(frozen=True)
class InventoryFile:
    key: str
    size: int


@dataclass(frozen=True)
class InventoryReport:
    key: str  # its manifest's key, which names the report
    created_at: datetime  # when the report began listing the bucket
    columns: tuple[str, ...]  # the data files' columns, in order
    files: tuple[InventoryFile, ...]


class InventoryReports(Protocol):
    def newest(self) -> InventoryReport | None:
        """The newest complete report, if any."""
        ...

    def report(self, key: str) -> InventoryReport:
        """The report of this manifest; ObjectNotFound once it has expired."""
        ...

    def rows(self, report: InventoryReport, file: int) -> Iterator[ObjectInfo]:
        """The current objects listed in the report's ``file``-th data file, streamed, in its order."""
        ...
