"""A hostile corpus (issue 18, item 8): Parquet files that lie, confuse or explode, each with what
the service does with it, at upload (the API's answer) and in the pipeline (what a run does with
the same file when it got into the catalog without those checks, as fragments uploaded before
them did, or bytes changed under a key).

``upload`` is the HTTP status and error code the API answers; ``planted`` is what the Compact step
does with it: ``"compacts"`` (every row kept) or the name of the engine error it is quarantined
with. Files are built small: the decode bomb is a 1 MiB dictionary value repeated 256 times (256 MiB
decoded from a 1 MiB file) and the oversized value one 80 MiB run of one byte, so neither costs the
test more than a few hundred MB.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from .forged_parquet import battle_rows, parquet_bytes, rewrite_counts
from .odd_parquet import nested_struct, rename_in_footer

MiB = 1 << 20
ROWS = 100  # rows of the ordinary cases


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[], bytes]
    upload: tuple[int, str | None]  # (status, error code)
    rows: int  # rows the file really holds (what the catalog registers when it is accepted)
    planted: str = "compacts"  # or the engine error it is quarantined with
    planted_rows: int | None = None  # the catalog's count when planted (default: rows)
    detail: str | None = None  # a word the refusal's message must contain
    details: dict[str, object] = field(default_factory=dict)  # what the refusal's details must hold

    @property
    def refused(self) -> bool:
        return self.upload[0] != 201

    @property
    def registered_rows(self) -> int:
        return self.rows if self.planted_rows is None else self.planted_rows


def write(table: pa.Table, **options: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)  # type: ignore[arg-type]
    return buf.getvalue()


def _file_level(count: int) -> bytes:
    return rewrite_counts(parquet_bytes(battle_rows(ROWS, start=1000)), file_rows=count)


def _row_group(count: int) -> bytes:
    return rewrite_counts(parquet_bytes(battle_rows(ROWS, start=2000)), row_group_rows={0: count})


def _pages_hold_fewer() -> bytes:
    # The row group and every column chunk say 1,000; the pages hold 100: only decoding tells.
    return rewrite_counts(
        parquet_bytes(battle_rows(ROWS, start=3000)), row_group_rows={0: 1000}, column_values={0: 1000}
    )


def _duplicate_names() -> bytes:
    return write(pa.Table.from_arrays([pa.array(range(ROWS)), pa.array(range(ROWS))], names=["battle_id", "battle_id"]))


def _empty_name() -> bytes:
    return write(pa.Table.from_arrays([pa.array(range(ROWS)), pa.array(range(ROWS))], names=["battle_id", ""]))


def _decode_bomb() -> bytes:
    # One 1 MiB string, 256 times, dictionary-encoded: 1 MiB of file, 256 MiB decoded.
    value = pa.array(["x" * MiB])
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 256, pa.int32()), value)
    return write(pa.table({"battle_id": pa.array(range(256)), "log": column}), compression="zstd")


def _huge_value() -> bytes:
    # One value of 80 MiB: past the 64 MiB one decode may take, whatever the slicing.
    return write(pa.table({"battle_id": [1], "log": ["y" * (80 * MiB)]}), compression="zstd")


def _truncated() -> bytes:
    data = parquet_bytes(battle_rows(ROWS, start=4000))
    return data[: len(data) // 2]


def _garbage_footer() -> bytes:
    data = parquet_bytes(battle_rows(ROWS, start=5000))
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    garbage = bytes((i * 37 + 11) % 256 for i in range(length))
    return data[:start] + garbage + data[-8:]


def _columns(n: int) -> bytes:
    return write(pa.table({f"c{i}": pa.array([i] * 5, pa.int16()) for i in range(n)}))


def _nested(depth: int) -> bytes:
    t, value = nested_struct(depth)
    return write(pa.table({"battle_id": [1], "deep": pa.array([value], t)}))


def _conflicting(kind: str) -> bytes:
    # The same column, once an integer and once text: two output groups, never a dropped row.
    values = pa.array(range(ROWS)) if kind == "int" else pa.array([f"hp-{i}" for i in range(ROWS)])
    return write(pa.table({"battle_id": pa.array(range(6000, 6000 + ROWS)), "hp_total": values}))


def _fixed_size_list() -> bytes:
    values = pa.FixedSizeListArray.from_arrays(pa.array(range(3 * ROWS), pa.int32()), 3)
    return write(pa.table({"battle_id": pa.array(range(7000, 7000 + ROWS)), "formation": values}))


def _non_utf8_name() -> bytes:
    return rename_in_footer(battle_rows(ROWS, start=8000), "map_id", b"map_\xff\xfe")


def _zero_rows() -> bytes:
    return write(battle_rows(0))


def _seconds_far_future() -> bytes:
    # Valid alone; joined with a nanosecond fragment of the same column its values do not fit
    # nanoseconds (year 2500): the cast to the unified schema fails, so it is quarantined.
    stamps = pa.array([datetime(2500, 1, 1)] * ROWS, pa.timestamp("s"))
    return write(pa.table({"battle_id": pa.array(range(9000, 9000 + ROWS)), "at": stamps}))


def _nanoseconds() -> bytes:
    stamps = pa.array([datetime(2025, 12, 17)] * ROWS, pa.timestamp("ns"))
    return write(pa.table({"battle_id": pa.array(range(9500, 9500 + ROWS)), "at": stamps}))


CORPUS: tuple[Case, ...] = (
    Case("file-level count says more", "footer: 1,000,000 rows; row group: 100", lambda: _file_level(1_000_000),
         (201, None), ROWS),
    Case("file-level count says fewer", "footer: 1 row; row group: 100", lambda: _file_level(1), (201, None), ROWS),
    Case("row group says more", "row group: 1,000,000 rows; columns: 100 values", lambda: _row_group(1_000_000),
         (422, "row_count_mismatch"), ROWS, "CorruptInputError", planted_rows=1_000_000, detail="1000000"),
    Case("row group says fewer", "row group: 10 rows; columns: 100 values", lambda: _row_group(10),
         (422, "row_count_mismatch"), ROWS, "CorruptInputError", planted_rows=10, detail="10 rows"),
    Case("pages hold fewer", "row group and columns: 1,000; pages: 100", _pages_hold_fewer,
         (422, "row_count_mismatch"), ROWS, "CorruptInputError", planted_rows=1000, detail="decoded"),
    Case("duplicate names", "two columns named battle_id", _duplicate_names, (422, "invalid_column_name"), ROWS,
         details={"column": "battle_id"}),
    Case("empty name", 'a column named ""', _empty_name, (422, "invalid_column_name"), ROWS),
    Case("decode bomb", "1 MiB of file, 256 MiB decoded (one dictionary value x 256)", _decode_bomb,
         (422, "decode_budget_exceeded"), 256, detail="decompression bomb"),
    Case("value past the decode limit", "one 80 MiB string", _huge_value, (422, "decode_budget_exceeded"), 1,
         "DecodeBudgetError", details={"column": "log", "limit": 64 * MiB}),
    Case("truncated", "the first half of a file", _truncated, (415, "not_parquet"), ROWS, "CorruptInputError"),
    Case("garbage footer", "footer bytes replaced, length and magic kept", _garbage_footer, (415, "not_parquet"),
         ROWS, "CorruptInputError"),
    Case("10,000 columns", "10,000 int16 columns, 5 rows", lambda: _columns(10_000), (422, "too_many_columns"), 5,
         details={"limit": 1000}),
    Case("100-deep nesting", "struct<struct<...>> 100 deep (102 Parquet levels)", lambda: _nested(100),
         (422, "nesting_too_deep"), 1, "UnsupportedInputError", details={"column": "deep", "limit": 100}),
    Case("conflicting types (int)", "hp_total: int64", lambda: _conflicting("int"), (201, None), ROWS),
    Case("conflicting types (string)", "hp_total: string", lambda: _conflicting("str"), (201, None), ROWS),
    Case("fixed-size list", "formation: fixed_size_list<int32>[3]", _fixed_size_list, (201, None), ROWS),
    Case("non-UTF-8 name", "a column named map_\\xff\\xfe", _non_utf8_name, (422, "invalid_column_name"), ROWS,
         "UnsupportedInputError", details={"column": "map_\\xff\\xfe"}),
    Case("zero rows", "a valid file with no row", _zero_rows, (201, None), 0),
    Case("timestamp past nanoseconds", "at: timestamp[s], year 2500", _seconds_far_future, (201, None), ROWS,
         "SchemaCastError"),
    Case("timestamp in nanoseconds", "at: timestamp[ns]", _nanoseconds, (201, None), ROWS),
)  # fmt: skip


def by_name(name: str) -> Case:
    return next(c for c in CORPUS if c.name == name)
