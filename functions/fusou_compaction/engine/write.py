"""Encode and stitch: row groups gathered from decoded pieces, encoded in parallel as standalone
one-row-group Parquet files in memory, then joined in order into outputs that roll over near the
target size (engine/stitch.py: no page is re-encoded)."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fusou_compaction.engine.encodings import writer_options
from fusou_compaction.engine.errors import EngineError
from fusou_compaction.engine.read import Piece
from fusou_compaction.engine.stitch import ParquetPart, ParquetStitcher, StitchError
from fusou_compaction.engine.tuning import MergeTuning
from fusou_compaction.ports.object_store import WritableObject


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str
    rows: int
    bytes: int
    sha256: str
    schema_fingerprint: str
    input_ids: list[str]  # inputs with at least one row in this output, in upload order
    schema: pa.Schema | None = None  # the output's (unified) schema: callers record it by fingerprint


def encode_part(
    table: pa.Table, schema: pa.Schema, options: dict[str, Any], level: int, checksums: bool = True
) -> ParquetPart:
    """One row group as a standalone Parquet file in memory (runs on an encoder thread)."""
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(
        out,
        schema,
        compression="zstd",
        compression_level=level,
        write_page_index=False,  # page offsets inside the data could not be moved by the stitcher
        # A CRC32 in every page header, so readers that verify (pyarrow's
        # page_checksum_verification, Spark, DuckDB) detect a flipped byte; the stitcher moves
        # pages whole, so it keeps them valid. Cost: bench/RESULTS.md.
        write_page_checksum=checksums,
        **options,
    ) as writer:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
    return ParquetPart(out.getvalue())


class OutputWriter:
    """One output file, joined from encoded row groups; aborted on any error."""

    def __init__(self, name: str, sink: WritableObject):
        self.name = name
        self.sink = sink
        self.input_ids: list[str] = []
        self._seen: set[str] = set()
        self._stitcher = ParquetStitcher(sink.write)

    @property
    def rows(self) -> int:
        return self._stitcher.rows

    def tell(self) -> int:
        return self._stitcher.bytes_written

    def append(self, part: ParquetPart, input_ids: list[str]) -> None:
        self._stitcher.append(part)
        for i in input_ids:
            if i not in self._seen:
                self._seen.add(i)
                self.input_ids.append(i)

    def abort(self) -> None:
        if not self.sink.closed:
            with contextlib.suppress(Exception):
                self.sink.abort()

    def finish(self, fingerprint: str, schema: pa.Schema) -> OutputFile:
        size = self._stitcher.finish()
        self.sink.close()
        return OutputFile(self.name, self.rows, size, self.sink.sha256, fingerprint, self.input_ids, schema)


class GroupWriter:
    """Gathers one schema group's pieces into row groups, has them encoded in parallel, and joins
    them, in order, into outputs that roll over near the target size.

    A new output is started when the next encoded row group would push the current one past
    ``target_file_size`` (exact: the encoded size is known when it is placed). Finished outputs
    are yielded not yet closed; the caller closes them.
    """

    def __init__(
        self,
        schema: pa.Schema,
        encode_pool: ThreadPoolExecutor,
        open_next: Callable[[], OutputWriter],
        *,
        target_file_size: int,
        tuning: MergeTuning,
        max_pending: int,
    ) -> None:
        self._schema = schema
        self._encode_pool = encode_pool
        self._open_next = open_next
        self._target = target_file_size
        self._tuning = tuning
        self._max_pending = max_pending
        self._options: dict[str, Any] | None = None  # one set of encoding choices: parts must agree
        self._pending: deque[tuple[Future[ParquetPart], list[str]]] = deque()
        self._current: OutputWriter | None = None
        self._chunks: list[pa.Table] = []
        self._chunk_ids: list[str] = []
        self._chunk_rows = 0
        self._chunk_bytes = 0

    def write(self, pieces: Iterator[Piece]) -> Iterator[OutputWriter]:
        try:
            for piece in pieces:
                yield from self._add(piece)
            yield from self._flush()
            while self._pending:
                yield from self._place()
        finally:
            for fut, _ in self._pending:
                fut.cancel()
        if self._current is not None:
            yield self._current

    def _add(self, piece: Piece) -> Iterator[OutputWriter]:
        table = piece.table
        if table.num_rows == 0:
            return
        tuning = self._tuning
        per_row = max(1, piece.nbytes // table.num_rows)
        offset = 0
        while offset < table.num_rows:
            room = min(
                tuning.max_row_group_rows - self._chunk_rows,
                max(1, (tuning.row_group_bytes - self._chunk_bytes) // per_row),
            )
            take = min(room, table.num_rows - offset)
            self._chunks.append(table if (offset == 0 and take == table.num_rows) else table.slice(offset, take))
            for input_id in piece.ids_in(offset, take):
                if not self._chunk_ids or self._chunk_ids[-1] != input_id:
                    self._chunk_ids.append(input_id)
            self._chunk_rows += take
            self._chunk_bytes += take * per_row
            offset += take
            if self._chunk_rows >= tuning.max_row_group_rows or self._chunk_bytes >= tuning.row_group_bytes:
                yield from self._flush()

    def _flush(self) -> Iterator[OutputWriter]:
        if not self._chunks:
            return
        table = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        if self._options is None:
            self._options = writer_options(table, self._tuning)
        part = self._encode_pool.submit(
            encode_part,
            table,
            self._schema,
            self._options,
            self._tuning.compression_level,
            self._tuning.page_checksums,
        )
        self._pending.append((part, self._chunk_ids))
        self._chunks, self._chunk_ids, self._chunk_rows, self._chunk_bytes = [], [], 0, 0
        # Bound memory (row groups waiting or encoding), and place finished ones early.
        while len(self._pending) > self._max_pending or (self._pending and self._pending[0][0].done()):
            yield from self._place()

    def _place(self) -> Iterator[OutputWriter]:
        fut, ids = self._pending.popleft()
        try:
            part = fut.result()
        except StitchError as exc:  # our encoder wrote something the stitcher cannot join: a bug
            raise EngineError(f"encoded row group cannot be joined: {exc}") from exc
        current = self._current
        if current is not None and current.rows and current.tell() + part.body_size > self._target:
            yield current
            current = None
        if current is None:
            current = self._current = self._open_next()
        current.append(part, ids)
