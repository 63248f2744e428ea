"""logic/orphans.py: what mutation testing (make mutate MODULE=logic.orphans) found untested.

The inventory sweep's reading of a report, against a real catalog: reports held in memory (as
S3 Inventory's port serves them), a clock that runs out at a chosen row, a data file that breaks
or expires mid-read. What is checked: which report a resumed sweep reads, where it resumes, what
it counts and names, what it records when a file breaks, and how a report that expired is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4

import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.logic.orphans import OrphanReport, reconcile_inventory
from fusou_compaction.ports.inventory import InventoryFile, InventoryReport
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound, ObjectStore

LONG_AGO = datetime.now(UTC) - timedelta(days=1)


def _forever() -> float:
    return math.inf


def clock(*looks: float, then: float = 10.0) -> Callable[[], float]:
    """Seconds left at each look, then ``then`` for every look after."""
    it = iter(looks)
    return lambda: next(it, then)


def foreign(*names: str) -> list[ObjectInfo]:
    """Rows for keys under no prefix of ours (the sweep counts them, never touches them)."""
    return [ObjectInfo(f"exports/{n}.csv", 1, LONG_AGO) for n in names]


class Reports:
    """S3 Inventory's reports in memory. ``broken``: (report, file) -> what reading that file raises
    the next time; ``fetched``: the manifests read (beyond ``newest``)."""

    def __init__(self) -> None:
        self.files: dict[str, list[list[ObjectInfo]]] = {}
        self.by_key: dict[str, InventoryReport] = {}
        self.broken: dict[tuple[str, int], Exception] = {}
        self.fetched: list[str] = []

    def add(self, *files: list[ObjectInfo]) -> InventoryReport:
        created = datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=len(self.by_key))
        key = f"inventory/{created:%Y-%m-%dT%H-%M-%S}Z/manifest.json"
        report = InventoryReport(
            key=key,
            created_at=created,
            columns=("Bucket", "Key", "Size", "LastModifiedDate"),
            files=tuple(InventoryFile(f"data/{i}.csv.gz", 1) for i in range(len(files))),
        )
        self.by_key[key], self.files[key] = report, list(files)
        return report

    def newest(self) -> InventoryReport | None:
        return max(self.by_key.values(), key=lambda r: r.created_at, default=None)

    def report(self, key: str) -> InventoryReport:
        self.fetched.append(key)
        if key not in self.by_key:
            raise ObjectNotFound(str(key))
        return self.by_key[key]

    def rows(self, report: InventoryReport, file: int) -> Iterator[ObjectInfo]:
        if (error := self.broken.pop((report.key, file), None)) is not None:
            raise error
        return iter(self.files[report.key][file])


def _sweep(catalog: Catalog, store: Any, reports: Reports, **kw: Any) -> OrphanReport:
    return reconcile_inventory(
        catalog,
        cast(ObjectStore, store),
        reports,
        owner=kw.pop("owner", "t"),
        orphan_min_age=timedelta(hours=6),
        every=timedelta(0),
        time_left=kw.pop("time_left", _forever),
        stop_with_seconds_left=30,
        **kw,
    )


def test_every_unknown_key_is_counted_twenty_are_named_and_the_newest_report_is_not_read_twice(
    catalog: Catalog,
) -> None:
    # Given the newest report, listing 24 keys that are not ours
    reports = Reports()
    names = [f"k{i:02d}" for i in range(24)]
    newest = reports.add(foreign(*names))
    # When the inventory sweep runs
    report = _sweep(catalog, None, reports)
    # Then all 24 are counted, the first 20 named
    assert report.finished and report.report == newest.key and report.examined == 24
    assert report.unknown == 24 and report.unknown_sample == [f"exports/{n}.csv" for n in names[:20]]
    # And the report it was handed as the newest was not read again
    assert reports.fetched == []


def test_a_resumed_sweep_reads_the_report_it_was_in_not_a_newer_one(catalog: Catalog) -> None:
    # Given a report of six keys, and a sweep that ran out of time after two of them
    reports = Reports()
    older = reports.add(foreign(*(f"a{i}" for i in range(6))))
    first = _sweep(catalog, None, reports, time_left=clock(900.0), check_time_every=2)
    assert (first.finished, first.examined) == (False, 2)
    # And a newer report delivered since
    newer = reports.add(foreign("b0", "b1", "b2"))
    # When the next invocation goes on
    second = _sweep(catalog, None, reports)
    # Then it finishes the older report, the four rows it had left, reading that report's manifest
    assert second.report == older.key and second.finished and second.errors == []
    assert second.examined == 4 and second.unknown_sample == [f"exports/a{i}.csv" for i in range(2, 6)]
    assert reports.fetched == [older.key]
    # And the invocation after that takes the newer one, whole
    third = _sweep(catalog, None, reports)
    assert (third.report, third.examined, third.finished) == (newer.key, 3, True)


def test_a_sweep_that_stopped_in_a_later_data_file_resumes_there(catalog: Catalog) -> None:
    # Given a report of three data files of four keys each
    reports = Reports()
    reports.add(foreign("a0", "a1", "a2", "a3"), foreign("b0", "b1", "b2", "b3"), foreign("c0", "c1", "c2", "c3"))
    # When a sweep looking at the clock every two rows runs out of time at row 2 of the second file
    # the clock's looks: the lease, rows 2 and 4 of the first file, then out of time
    first = _sweep(catalog, None, reports, time_left=clock(900.0, 900.0, 900.0), check_time_every=2)
    assert (first.finished, first.examined) == (False, 6)
    status = catalog.orphan_sweep_status()["inventory"]
    assert (status["file"], status["rows"]) == (1, 2)
    # Then the next invocation reads only the six rows left, from row 3 of the second file
    second = _sweep(catalog, None, reports)
    assert (second.finished, second.examined) == (True, 6)
    assert second.unknown_sample == [f"exports/{n}.csv" for n in ("b2", "b3", "c0", "c1", "c2", "c3")]


def test_a_sweep_that_crashed_in_a_data_file_resumes_at_that_files_first_row(catalog: Catalog) -> None:
    # Given a report of three data files of three keys each, whose second file's read fails once
    reports = Reports()
    report = reports.add(foreign("a0", "a1", "a2"), foreign("b0", "b1", "b2"), foreign("c0", "c1", "c2"))
    reports.broken[(report.key, 1)] = ConnectionResetError("connection reset by peer")
    # When the sweep reads it, and the read of the second file fails
    with pytest.raises(ConnectionResetError):
        _sweep(catalog, None, reports)
    # Then its place is the start of the second file (the first was read to its end), and the
    # sweep is free for the next invocation
    status = catalog.orphan_sweep_status()["inventory"]
    assert (status["report"], status["file"], status["rows"]) == (report.key, 1, 0)
    assert status["lease_owner"] is None
    # And the next invocation reads the second and third files whole
    again = _sweep(catalog, None, reports, owner="next")
    assert (again.finished, again.examined) == (True, 6)
    assert again.unknown_sample == [f"exports/{n}.csv" for n in ("b0", "b1", "b2", "c0", "c1", "c2")]


def test_a_report_that_expired_under_the_sweep_is_dropped_not_finished_and_taken_again(catalog: Catalog) -> None:
    # Given a report of two data files, the second of which is gone when the sweep gets to it
    reports = Reports()
    report = reports.add(foreign("a0", "a1"), foreign("b0", "b1"))
    gone = ObjectNotFound("inventory/data/1.csv.gz")
    reports.broken[(report.key, 1)] = gone
    # When the sweep reads it
    first = _sweep(catalog, None, reports)
    # Then it reports the report abandoned, with the reason, and not finished
    assert first.errors == [f"inventory report {report.key} abandoned: {gone}"]
    assert (first.finished, first.examined) == (False, 2)
    # And the catalog holds no report in progress, and none finished (the report was not swept whole)
    status = catalog.orphan_sweep_status()["inventory"]
    assert (status["report"], status["last_report"], status["lease_owner"]) == (None, None, None)
    # And the next sweep takes the newest report again, which is this one, whole
    again = _sweep(catalog, None, reports)
    assert (again.report, again.examined, again.finished) == (report.key, 4, True)


class Gone:
    """A store in which every object the report listed has been deleted since (HEAD finds nothing)."""

    def __init__(self) -> None:
        self.heads = 0

    def head(self, key: str) -> ObjectInfo | None:
        self.heads += 1
        return None

    def delete_many(self, keys_: list[str]) -> list[str]:
        raise AssertionError("nothing is deleted")


class CountingCatalog:
    """The catalog, counting the keys of each find_orphans call."""

    def __init__(self, inner: Catalog) -> None:
        self.inner = inner
        self.asked: list[int] = []

    def find_orphans(self, keys_: list[str]) -> list[str]:
        self.asked.append(len(keys_))
        return self.inner.find_orphans(keys_)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_old_enough_keys_are_asked_of_the_catalog_a_thousand_at_a_time(catalog: Catalog) -> None:
    # Given a report of 2,000 dataset keys, all seven hours old, that no catalog row knows
    rows = [
        ObjectInfo(keys.fragment_key(uuid4(), "battle", f"{i:064x}"), 1, datetime.now(UTC) - timedelta(hours=7))
        for i in range(2000)
    ]
    reports = Reports()
    reports.add(rows)
    counting, store = CountingCatalog(catalog), Gone()
    # When the inventory sweep reads it
    report = _sweep(cast(Catalog, counting), store, reports)
    # Then the catalog is asked about them in two calls of a thousand keys
    assert counting.asked == [1000, 1000]
    # And each orphan is looked at again before a delete: all are gone already, none is deleted
    assert store.heads == 2000 and report.deleted == 0 and report.finished
