"""Join standalone Parquet files into one, without decoding or re-encoding a single page.

Why: pyarrow's Parquet writer encodes one file on one thread, and encoding is most of a
compaction's CPU. Encoding each row group as its own small Parquet file lets several threads
encode the row groups of one output at once; this module then lays their column chunks end to end
and writes one footer that lists every row group, with each file offset moved by where its bytes
landed. Readers see an ordinary Parquet file (the tests read it with pyarrow, DuckDB and polars).

A part is accepted only if it is a plain (unencrypted) file with the same Parquet schema as the
first part and no page index: the OffsetIndex stores absolute page offsets inside the data, which
moving the bytes would make wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fusou_compaction.engine.thrift_compact import (
    I16,
    I64,
    LIST,
    STRUCT,
    List,
    Plan,
    Struct,
    ThriftError,
    decode_struct,
    encode_struct,
)

MAGIC = b"PAR1"

# Field ids from parquet.thrift (apache/parquet-format).
_FMD_SCHEMA, _FMD_NUM_ROWS, _FMD_ROW_GROUPS = 2, 3, 4
_FMD_ENCRYPTION = (8, 9)
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_PATH, _CC_FILE_OFFSET, _CC_META = 1, 2, 3
_CC_PAGE_INDEX = (4, 5, 6, 7)  # offset/column index offsets and lengths
_CC_ENCRYPTION = (8, 9)
_CMD_OFFSETS = (9, 10, 11, 14)  # data page, index page, dictionary page, bloom filter
# Decode only the way down to the offsets (row groups -> column chunks -> column metadata); the
# schema, statistics and key-value metadata stay as bytes: ~2x cheaper per part.
_PLAN: Plan = {_FMD_ROW_GROUPS: {_RG_COLUMNS: {_CC_META: {}}}}


class StitchError(ValueError):
    """A part cannot be joined (not Parquet, another schema, a page index, encryption)."""


def _footer(view: memoryview) -> tuple[Struct, int]:
    """The decoded footer of one Parquet file in memory, and where the footer starts."""
    n = len(view)
    if n < 12 or view[:4] != MAGIC or view[n - 4 :] != MAGIC:
        raise StitchError("not a Parquet file (magic bytes missing)")
    length = int.from_bytes(view[n - 8 : n - 4], "little")
    start = n - 8 - length
    if start < 4:
        raise StitchError("footer length points outside the file")
    try:
        return decode_struct(view[start : n - 8], _PLAN), start
    except ThriftError as exc:
        raise StitchError(f"unreadable footer: {exc}") from exc


def _shift(value: int, by: int) -> int:
    return value + by if value > 0 else value  # 0 means "not set" in these fields


def _field(struct: Struct, fid: int, kind: type, what: str) -> Any:
    value = struct.get(fid)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise StitchError(f"footer has no valid {what}")
    return value


def _moved_row_group(rg: Struct, by: int, ordinal: int) -> Struct:
    """A copy of ``rg`` with every file offset moved by ``by``: the part itself stays as it was,
    so it could be joined again (a retried output)."""
    if not isinstance(rg, Struct):
        raise StitchError("footer has no valid row group")
    moved_chunks = []
    for chunk in _field(rg, _RG_COLUMNS, List, "column chunk list").items:
        if not isinstance(chunk, Struct):
            raise StitchError("footer has no valid column chunk")
        if chunk.has(_CC_FILE_PATH):
            raise StitchError("column chunk stored in another file")
        if any(chunk.has(f) for f in _CC_ENCRYPTION):
            raise StitchError("encrypted column chunk")
        if any(chunk.has(f) for f in _CC_PAGE_INDEX):
            raise StitchError("page index present: write the parts with write_page_index=False")
        meta = chunk.get(_CC_META)
        if not isinstance(meta, Struct):
            raise StitchError("column chunk without metadata")
        meta = Struct(list(meta.fields))
        for fid in _CMD_OFFSETS:
            value = meta.get(fid)
            if value is not None:
                meta.set(fid, I64, _shift(value, by))
        moved_chunk = Struct(list(chunk.fields))
        moved_chunk.set(_CC_META, STRUCT, meta)
        offset = moved_chunk.get(_CC_FILE_OFFSET)
        if offset is not None:
            moved_chunk.set(_CC_FILE_OFFSET, I64, _shift(offset, by))
        moved_chunks.append(moved_chunk)
    moved = Struct(list(rg.fields))
    moved.set(_RG_COLUMNS, LIST, List(STRUCT, moved_chunks))
    _field(moved, _RG_NUM_ROWS, int, "row count in a row group")
    offset = moved.get(_RG_FILE_OFFSET)
    if offset is not None:
        moved.set(_RG_FILE_OFFSET, I64, _shift(offset, by))
    moved.set(_RG_ORDINAL, I16, ordinal)
    return moved


class ParquetPart:
    """One standalone Parquet file in memory, footer parsed: a unit the stitcher can append."""

    __slots__ = ("_buffer", "_view", "footer_start", "meta", "num_rows")

    def __init__(self, buffer: Any) -> None:
        self._buffer = buffer  # keeps the memory alive while the view is used
        self._view = memoryview(buffer)
        self.meta, self.footer_start = _footer(self._view)
        if any(self.meta.has(f) for f in _FMD_ENCRYPTION):
            raise StitchError("encrypted footer")
        self.num_rows: int = self.meta.get(_FMD_NUM_ROWS)

    @property
    def body_size(self) -> int:
        """Bytes the part adds to a file: its column chunks, without magic and footer."""
        return self.footer_start - len(MAGIC)

    @property
    def body(self) -> memoryview:
        return self._view[len(MAGIC) : self.footer_start]


class ParquetStitcher:
    """Writes one Parquet file from parts appended in order; ``finish`` writes the footer.

    ``write`` receives the file's bytes front to back (a sink's ``write``). Nothing is buffered
    here beyond the parts' row-group metadata, a few KB per row group.
    """

    def __init__(self, write: Callable[[memoryview | bytes], Any]) -> None:
        self._write = write
        self._pos = 0
        self._first: Struct | None = None
        self._schema: Any = None
        self._row_groups: list[Struct] = []
        self._rows = 0

    @property
    def bytes_written(self) -> int:
        return self._pos

    @property
    def rows(self) -> int:
        return self._rows

    def append(self, part: ParquetPart) -> None:
        """Add every row group of ``part`` after those already written.

        Everything is checked before a byte is written: a refused part leaves the stitcher as it
        was, and the part itself is never modified.
        """
        schema = part.meta.get(_FMD_SCHEMA)
        if self._first is not None and schema != self._schema:
            raise StitchError("part has a different Parquet schema than the first part")
        start = self._pos or len(MAGIC)
        by = start - len(MAGIC)  # the part's body starts at offset 4 in the part, and at `start` here
        groups = part.meta.get(_FMD_ROW_GROUPS)
        if groups is not None and not isinstance(groups, List):
            raise StitchError("footer has no valid row group list")
        first = len(self._row_groups)
        moved = [_moved_row_group(rg, by, first + i) for i, rg in enumerate(groups.items if groups else [])]
        if not isinstance(part.num_rows, int) or sum(rg.get(_RG_NUM_ROWS) for rg in moved) != part.num_rows:
            raise StitchError("row groups disagree with the footer's row count")
        if self._first is None:
            self._first, self._schema = part.meta, schema
        if self._pos == 0:
            self._write(MAGIC)
            self._pos = len(MAGIC)
        self._write(part.body)
        self._pos += part.body_size
        self._row_groups.extend(moved)
        self._rows += part.num_rows

    def finish(self) -> int:
        """Write the footer and the closing magic; returns the file's size in bytes."""
        if self._first is None:
            raise StitchError("no parts to join")
        footer = Struct(list(self._first.fields))
        footer.set(_FMD_NUM_ROWS, I64, self._rows)
        footer.set(_FMD_ROW_GROUPS, LIST, List(STRUCT, self._row_groups))
        encoded = encode_struct(footer)
        self._write(encoded)
        self._write(len(encoded).to_bytes(4, "little"))
        self._write(MAGIC)
        self._pos += len(encoded) + 4 + len(MAGIC)
        return self._pos
