"""Parquet files whose footers say something other than their pages hold, built byte by byte.

- ``file_rows``: the file-level ``num_rows`` (an early version of the Rust ``parquet`` crate, which
  FUSOU's uploader uses, left it at 0 while the row group held the rows; readers go by the row
  groups);
- ``row_group_rows``: a row group's own count (readers then disagree: pyarrow reads that many
  rows, DuckDB refuses the file);
- ``column_values``: each column chunk's ``num_values`` in a row group, so that a lying row group
  count agrees with the rest of the footer and only decoding can tell.

The footer is re-encoded with the engine's schema-less Thrift codec, which keeps every other
field byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fusou_compaction.engine import thrift_compact as tc

_FMD_NUM_ROWS, _FMD_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_NUM_ROWS = 1, 3
_CC_META, _CMD_NUM_VALUES = 3, 5


def battle_rows(n: int = 6, *, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "battle_id": pa.array(range(start, start + n), pa.int64()),
            "map_id": pa.array([f"1-{i % 5 + 1}" for i in range(n)]),
            "hp": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int32())),
        }
    )


def parquet_bytes(table: pa.Table, *, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size, compression="snappy")
    return buf.getvalue()


def rewrite_counts(
    data: bytes,
    *,
    file_rows: int | None = None,
    row_group_rows: dict[int, int] | None = None,
    column_values: dict[int, int] | None = None,
) -> bytes:
    """``data`` with the given counts written into its footer (see the module's docstring)."""
    n = len(data)
    length = int.from_bytes(data[n - 8 : n - 4], "little")
    start = n - 8 - length
    footer = tc.decode_struct(data[start : n - 8], {_FMD_ROW_GROUPS: {_RG_COLUMNS: {_CC_META: {}}}})
    if file_rows is not None:
        footer.set(_FMD_NUM_ROWS, tc.I64, file_rows)
    groups = footer.get(_FMD_ROW_GROUPS).items
    for i, rows in (row_group_rows or {}).items():
        groups[i].set(_RG_NUM_ROWS, tc.I64, rows)
    for i, values in (column_values or {}).items():
        for chunk in groups[i].get(_RG_COLUMNS).items:
            chunk.get(_CC_META).set(_CMD_NUM_VALUES, tc.I64, values)
    body = tc.encode_struct(footer)
    return data[:start] + body + len(body).to_bytes(4, "little") + b"PAR1"


def rust_zero_count_parquet(rows: int = 6, *, start: int = 0) -> bytes:
    """A file as the early Rust writer left it: file-level num_rows 0, one row group of ``rows``."""
    return rewrite_counts(parquet_bytes(battle_rows(rows, start=start)), file_rows=0)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
