"""Odd but valid Parquet for issue 17: names that are not UTF-8 (forged: pyarrow only writes text
names) and nesting past pyarrow's default reading depth (pyarrow writes it, then cannot read it).
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fusou_compaction.engine import thrift_compact as tc

_FMD_SCHEMA, _FMD_ROW_GROUPS = 2, 4
_SE_NAME = 4
_RG_COLUMNS = 1
_CC_META, _CMD_PATH = 3, 3


def rename_in_footer(table: pa.Table, old: str, new: bytes) -> bytes:
    """``table`` as Parquet whose column (or struct field, at any depth) ``old`` is named ``new``:
    the footer's schema element and every column chunk's path are rewritten byte for byte.

    Written without the stored Arrow schema, which would still carry the old name.
    """
    buf = io.BytesIO()
    pq.write_table(table, buf, store_schema=False)
    data = buf.getvalue()
    n = len(data)
    start = n - 8 - int.from_bytes(data[n - 8 : n - 4], "little")
    footer = tc.decode_struct(
        data[start : n - 8], {_FMD_SCHEMA: {}, _FMD_ROW_GROUPS: {_RG_COLUMNS: {_CC_META: {_CMD_PATH: {}}}}}
    )
    renamed = 0
    for element in footer.get(_FMD_SCHEMA).items:
        if element.get(_SE_NAME) == old.encode():
            element.set(_SE_NAME, tc.BINARY, new)
            renamed += 1
    assert renamed == 1, f"{old!r} names {renamed} schema elements"
    for group in footer.get(_FMD_ROW_GROUPS).items:
        for chunk in group.get(_RG_COLUMNS).items:
            path = chunk.get(_CC_META).get(_CMD_PATH)
            path.items = [new if part == old.encode() else part for part in path.items]
    body = tc.encode_struct(footer)
    return data[:start] + body + len(body).to_bytes(4, "little") + b"PAR1"


def nested_struct(depth: int) -> tuple[pa.DataType, Any]:
    """struct<f: struct<f: ... int64>>, ``depth`` structs deep, and one value of it."""
    t: pa.DataType = pa.int64()
    value: Any = 1
    for _ in range(depth):
        t, value = pa.struct([("f", t)]), {"f": value}
    return t, value


def nested_list(depth: int) -> tuple[pa.DataType, Any]:
    """list<list<... int64>>, ``depth`` lists deep, and one value of it."""
    t: pa.DataType = pa.int64()
    value: Any = 1
    for _ in range(depth):
        t, value = pa.list_(t), [value]
    return t, value
