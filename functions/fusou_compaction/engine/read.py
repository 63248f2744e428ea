"""Read and conform: footers, then each input decoded (whole, or row group by row group) and cast
to its group's unified schema, ahead of the writer in a pool, in upload order.

Memory: decoded bytes in flight are bounded by ``MergeTuning.read_ahead_bytes``; a row group too
big for the budget is decoded in slices on the calling thread.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow._parquet import ParquetReader as _ArrowParquetReader

from fusou_compaction.engine.errors import CorruptInputError, DecodeBudgetError, EngineError, SchemaCastError
from fusou_compaction.engine.planner import InputFile, MiB
from fusou_compaction.engine.rowcount import FooterRows, RowCountMismatch, check_decoded, count_rows
from fusou_compaction.engine.schema import (
    READ_SCHEMA_DEPTH,
    conform_table,
    has_duplicate_names,
    merge_schemas,
    schema_fingerprint,
)
from fusou_compaction.engine.thrift_compact import ThriftError
from fusou_compaction.engine.thrift_compact import _Reader as _ThriftReader
from fusou_compaction.engine.tuning import MergeTuning


@dataclass(slots=True)
class Footer:
    """What phase 1 keeps per input: small, so a bin of 10,000 tiny fragments stays cheap.

    With a known schema there is no phase 1: ``row_groups`` is None until the footer is read,
    which happens when the input is decoded (or just before, for inputs too big to read whole).
    """

    input: InputFile
    num_rows: int
    row_groups: tuple[tuple[int, int], ...] | None  # (rows, uncompressed bytes) per row group
    schema: pa.Schema  # shared between inputs with the same fingerprint
    # The parsed footer (~30 KB in memory) is kept only for inputs read row group by row group
    # and the first MergeTuning.cached_footers inputs; the rest are parsed again when fetched.
    metadata: pq.FileMetaData | None
    # Per row group, the Arrow bytes its column chunks say it decodes to (decoded_bytes); None
    # when the footer bounds the whole input below _DECODE_LIMIT (FooterRows.decode_bounds).
    decoded: tuple[int, ...] | None = None


@dataclass(slots=True)
class Piece:
    """Decoded, conformed rows of one input, or of several whole consecutive inputs (a batch)."""

    spans: tuple[tuple[str, int], ...]  # (input id, rows), in order: the table's rows, input by input
    table: pa.Table
    nbytes: int  # decoded Arrow bytes, measured on the decode thread

    @staticmethod
    def of(input_id: str, table: pa.Table, nbytes: int) -> Piece:
        return Piece(((input_id, table.num_rows),), table, nbytes)

    def ids_in(self, offset: int, rows: int) -> Iterator[str]:
        """The inputs with rows in ``[offset, offset + rows)`` of the table, in order."""
        start = 0
        for input_id, n in self.spans:
            if n and start < offset + rows and offset < start + n:
                yield input_id
            start += n


def sized(table: pa.Table) -> tuple[pa.Table, int]:
    # get_total_buffer_size: ~5x cheaper than nbytes (no de-duplication of shared buffers), and
    # exact for freshly decoded tables, which share nothing.
    return table, table.get_total_buffer_size()


def _corrupt(inp: InputFile, exc: BaseException) -> CorruptInputError:
    reason = "missing" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
    return CorruptInputError(inp.id, inp.path, reason)


class SchemaInterner:
    """One Schema object per distinct schema: thousands of fragments share a few schemas."""

    def __init__(self) -> None:
        self._by_key: dict[str, pa.Schema] = {}
        self._lock = threading.Lock()

    def intern(self, schema: pa.Schema) -> pa.Schema:
        # Exact types (dictionary, unit, zone) are in the text: encodings matter to casts. The text
        # is ~30x cheaper than a fingerprint, which unify_schemas computes once per distinct schema.
        key = schema.to_string(show_field_metadata=False, show_schema_metadata=False)
        with self._lock:
            return self._by_key.setdefault(key, schema)


def open_parquet(source: pa.NativeFile, metadata: pq.FileMetaData | None = None) -> Any:
    """pyarrow's own Parquet reader, as pq.ParquetFile opens it, without ParquetFile's per-file
    Python work (a map of nested column paths we never use): ~0.04 ms of ~0.3 ms per tiny
    fragment, paid twice per input (bench/RESULTS.md)."""
    reader = _ArrowParquetReader()
    # Past pyarrow's default depth limit, so that a too deep column is named (unsupported_column).
    # The stubs lack schema_depth_limit.
    reader.open(source, metadata=metadata, pre_buffer=False, schema_depth_limit=READ_SCHEMA_DEPTH)  # type: ignore[call-arg]
    return reader


def _parse_footer(fs: pafs.FileSystem, inp: InputFile) -> tuple[pq.FileMetaData, pa.Schema]:
    try:
        with fs.open_input_file(inp.path) as f:
            reader = open_parquet(f)
            return reader.metadata, reader.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise _corrupt(inp, exc) from exc


def _footer_rows(inp: InputFile, md: pq.FileMetaData) -> FooterRows:
    """The input's rows counted from its row groups (never the file-level count alone: see
    engine/rowcount.py), checked against the catalog's count when the caller gave one."""
    try:
        counted = count_rows(md)
    except RowCountMismatch as exc:
        raise CorruptInputError(inp.id, inp.path, str(exc)) from exc
    rows = counted.total
    if inp.row_count is not None and inp.row_count != rows:
        raise CorruptInputError(inp.id, inp.path, f"row groups hold {rows} rows, catalog says {inp.row_count}")
    return counted


def _check_decoded(inp: InputFile, expected: int, decoded: int, where: str) -> None:
    try:
        check_decoded(expected, decoded, where)
    except RowCountMismatch as exc:
        raise CorruptInputError(inp.id, inp.path, str(exc)) from exc


def _row_groups(md: pq.FileMetaData) -> tuple[tuple[int, int], ...]:
    groups = [md.row_group(i) for i in range(md.num_row_groups)]
    return tuple((rg.num_rows, rg.total_byte_size) for rg in groups)


# What an input decodes to, from its footer. Parquet's uncompressed page bytes (total_byte_size)
# understate runs of one value, a repeated dictionary string or huge lists by orders of
# magnitude: 154 bytes of file holding one int64 value 2^29 times decode to 4 GiB. Such an input
# read whole, or in slices sized from those bytes, took the process out of memory.
#
# The most one decode (a whole input, a row group, a slice of rows) may take. Inputs whose footer
# says more are read in slices sized to stay well below it; a row or a single value past it
# cannot be sliced and is refused (DecodeBudgetError). 64 MiB: one row that size, its copy in the
# output row group and its encoding stay within the ~300 MB a bin of ordinary data peaks at.
_DECODE_LIMIT = 64 * MiB
# Where the learned ratio (see _pieces) says an input decodes to this many times less than its
# footer does, the footer is what it is charged: the ratio knows ordinary data (the footer
# estimates it within 1.0-1.6x of its Arrow bytes on this lake's tables), not a bomb.
_FOOTER_TRUST = 8
_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def decoded_bytes(md: pq.FileMetaData, index: int) -> tuple[int, tuple[str, str] | None]:
    """What row group ``index`` decodes to, in Arrow bytes, estimated from its column chunks; and
    (column, reason) when its footer alone shows a row or a value that cannot fit _DECODE_LIMIT.

    A fixed-width column counts its width per value (Arrow keeps a slot per value, null or not:
    so rows x width is a floor). A string column counts its offsets and its pages, and, when its
    values come from a dictionary, each value as long as the longer of its min and max statistics
    (or, without them, as long as its whole chunk, the only bound the footer gives: such an input
    is read in small slices that grow on what they measure). Never less than Parquet's bytes.
    """
    rg = md.row_group(index)
    total = fixed = widest = 0
    refusal: tuple[str, str] | None = None
    widest_column = ""
    for j in range(rg.num_columns):
        col = rg.column(j)
        values, pages, kind = col.num_values, col.total_uncompressed_size, col.physical_type
        width = _WIDTHS.get(kind)
        if width is None and kind == "FIXED_LEN_BYTE_ARRAY":
            width = md.schema.column(j).length
        if width is not None:
            est = values * width
            fixed += est
            if est > widest:
                widest, widest_column = est, col.path_in_schema
        else:
            est = 4 * values + pages
            if col.has_dictionary_page:
                stats = col.statistics
                low, high = (stats.min_raw, stats.max_raw) if stats is not None and stats.has_min_max else (None, None)
                known = low is not None and high is not None
                longest = max(len(low), len(high)) if low is not None and high is not None else pages
                est += values * longest
                if known and longest > _DECODE_LIMIT:
                    refusal = (col.path_in_schema, f"holds a value of {longest} bytes")
        # More page bytes than the limit per value: some value (or the dictionary the values
        # come from, which is decoded whole) is past it.
        if refusal is None and pages > _DECODE_LIMIT * max(1, values):
            refusal = (col.path_in_schema, f"holds {pages} bytes of pages for {values} values")
        total += max(est, pages)
    rows = rg.num_rows
    if refusal is None and rows > 0 and fixed // rows > _DECODE_LIMIT:
        refusal = (widest_column, f"holds rows of {fixed // rows} bytes of values each")
    return total, refusal


def _footer_decoded(inp: InputFile, md: pq.FileMetaData, counted: FooterRows) -> tuple[int, ...] | None:
    """Footer.decoded for an input; raises DecodeBudgetError for one that can never be decoded."""
    if sum(counted.decode_bounds) <= _DECODE_LIMIT:
        return None  # ordinary fragments: nothing more to look at
    out: list[int] = []
    for i in range(md.num_row_groups):
        est, refusal = decoded_bytes(md, i)
        if refusal is not None:
            column, reason = refusal
            raise DecodeBudgetError(inp.id, inp.path, column, f"in row group {i} {reason}: {_past_limit()}")
        out.append(est)
    return tuple(out)


def _past_limit() -> str:
    return f"past the {_DECODE_LIMIT // MiB} MiB one decode may take"


def _dictionary_page_bytes(f: pa.NativeFile, offset: int) -> int | None:
    """The uncompressed size of the (dictionary) page at ``offset``, from its page header."""
    try:
        f.seek(offset)
        header = _ThriftReader(f.read(1024)).struct({})
    except (ThriftError, OSError):
        return None  # the decode will say what is wrong with the file
    size = header.get(2)  # PageHeader.uncompressed_page_size
    return size if isinstance(size, int) else None


_KEEP_FOOTER_ABOVE = 4 * MiB  # input bytes


def read_footer(fs: pafs.FileSystem, inp: InputFile, keep: bool, schemas: SchemaInterner) -> Footer:
    md, schema = _parse_footer(fs, inp)
    counted = _footer_rows(inp, md)
    decoded = _footer_decoded(inp, md, counted)
    row_groups = _row_groups(md)
    # Kept for inputs that will likely be read row group by row group (big ones, bombs), which
    # are few. A small input with several row groups is read whole: keeping its ~30 KB footer
    # made memory grow with the number of inputs (80,000 tiny fragments, a quarter of them with
    # 2-4 row groups: 648 MB peak instead of ~180 MB; bench/RESULTS.md).
    keep = keep or (len(row_groups) > 1 and (inp.size_bytes > _KEEP_FOOTER_ABOVE or decoded is not None))
    return Footer(inp, counted.total, row_groups, schemas.intern(schema), md if keep else None, decoded)


def read_footers(
    fs: pafs.FileSystem,
    inputs: Sequence[InputFile],
    pool: ThreadPoolExecutor,
    *,
    threads: int,
    cached: int,
    schemas: SchemaInterner,
) -> list[Footer]:
    """Every input's footer, in input order, read in chunks: one task per input cost ~0.1 ms of
    thread hand-over each, as much as parsing a tiny fragment's footer. Chunks stay small enough
    that every thread has several (on an object store each read waits for a GET)."""
    size = max(1, min(64, -(-len(inputs) // (threads * 4))))

    def chunk(start: int) -> list[Footer]:
        end = min(len(inputs), start + size)
        return [read_footer(fs, inputs[n], n < cached, schemas) for n in range(start, end)]

    return [f for part in pool.map(chunk, range(0, len(inputs), size)) for f in part]


class SchemaMiss(EngineError):
    """An input does not fit the known schema handed to compact_bin, which catches it and starts
    the bin over with phase 1 (never seen by callers)."""

    def __init__(self, input_id: str) -> None:
        super().__init__(f"input {input_id} does not fit the known schema")
        self.input_id = input_id


class _FootersFirst(SchemaMiss):
    """Known schema: an input judged small by its file size, whose footer says it decodes past
    _DECODE_LIMIT. The bin starts over footers first, as for a schema miss (compact_bin), and
    that input is then read in slices."""

    def __init__(self, input_id: str) -> None:
        super().__init__(input_id)
        self.args = (f"input {input_id} decodes past {_DECODE_LIMIT // MiB} MiB: its footer is read first",)


class KnownSchema:
    """A unified schema the caller vouches for (the catalog's), and which input schemas fit it.

    An input fits when merging its schema into the known one changes nothing: then it is cast
    exactly as phase 1's unification would have cast it. Decided once per distinct schema.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._fingerprint = schema_fingerprint(schema)
        self._fits: dict[str, bool] = {}
        self._lock = threading.Lock()

    def fits(self, schema: pa.Schema) -> bool:
        key = schema.to_string(show_field_metadata=False, show_schema_metadata=False)
        with self._lock:
            known = self._fits.get(key)
        if known is None:
            merged = None if has_duplicate_names(schema) else merge_schemas(self.schema, schema)
            known = merged is not None and schema_fingerprint(merged) == self._fingerprint
            with self._lock:
                self._fits[key] = known
        return known


def _decoded_estimate(footer: Footer, row_groups: Sequence[int], ratio: float) -> int:
    # Parquet's uncompressed size: a lower bound of the decoded size, scaled by a learned ratio;
    # unless the footer says far more (_FOOTER_TRUST) or more than one decode may take: then
    # that, divided by the ratio that scales it back (so such a row group is read in slices).
    sizes = footer.row_groups or ()
    est = sum(sizes[i][1] for i in row_groups) or 1
    if footer.decoded is not None:
        said = sum(footer.decoded[i] for i in row_groups)
        if said > _FOOTER_TRUST * est * ratio or said > _DECODE_LIMIT:
            return max(est, int(said / ratio) + 1)
    return est


@dataclass(slots=True)
class _Batch:
    footers: list[Footer] = field(default_factory=list)
    charged: int = 0  # read-ahead bytes charged for it
    est: int = 0  # estimated Parquet bytes
    by_file: bool = False  # estimated from file sizes (known schema, footers not read yet)

    def takes(self, charged: int, by_file: bool, max_inputs: int, max_bytes: int) -> bool:
        if not self.footers:
            return True
        return by_file == self.by_file and len(self.footers) < max_inputs and self.charged + charged <= max_bytes

    def add(self, footer: Footer, charged: int, est: int, by_file: bool) -> None:
        self.footers.append(footer)
        self.charged += charged
        self.est += est
        self.by_file = by_file


class Reader:
    """Yields an ordered stream of pieces for one schema group, decoding ahead in a pool."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        pool: ThreadPoolExecutor,
        tuning: MergeTuning,
        on_input_read: Callable[[InputFile], None] | None,
        known: KnownSchema | None = None,
    ) -> None:
        self._fs = fs
        self._pool = pool
        self._tuning = tuning
        self._on_input_read = on_input_read
        self._known = known
        # Known schema: rows per input, learnt when its footer is read (there is no phase 1).
        self.rows: dict[str, int] = {}

    def _check(self, inp: InputFile, md: pq.FileMetaData) -> tuple[int, tuple[int, ...] | None]:
        """What phase 1 checks of a footer, for an input whose footer is read only now (known
        schema), before anything is decoded: its rows, and what it decodes to (Footer.decoded)."""
        counted = _footer_rows(inp, md)
        self.rows[inp.id] = counted.total
        return counted.total, _footer_decoded(inp, md, counted)

    def _fits(self, inp: InputFile, rows: int, schema: pa.Schema) -> None:
        """The rest of what phase 1 checks: that the input fits the known schema."""
        if rows > 0 and self._known is not None and not self._known.fits(schema):
            raise SchemaMiss(inp.id)

    def _load_footer(self, footer: Footer) -> None:
        md, schema = _parse_footer(self._fs, footer.input)
        footer.num_rows, footer.decoded = self._check(footer.input, md)
        self._fits(footer.input, footer.num_rows, schema)
        footer.row_groups, footer.metadata = _row_groups(md), md

    def _whole_raw(self, footer: Footer) -> pa.Table:
        """A whole input decoded as written (not yet conformed), its rows checked."""
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                buf = f.read_buffer()
            # The footer we already parsed is reused when kept; over a buffer, pyarrow's reader is
            # ~30% cheaper per small file than pq.read_table (no dataset machinery).
            reader = open_parquet(pa.BufferReader(buf), footer.metadata)
            # Known schema: this footer was not read before. Its rows and what it decodes to are
            # checked before decoding: an input judged small by its file size that decodes past
            # the limit starts the bin over, footers first (_FootersFirst).
            known = footer.row_groups is None
            expected = footer.num_rows
            if known:
                expected, decoded = self._check(inp, reader.metadata)
                if decoded is not None and sum(decoded) > _DECODE_LIMIT:
                    raise _FootersFirst(inp.id)
            table: pa.Table = reader.read_all(use_threads=False)
            # The decoded table's schema is the footer's Arrow schema: checking it spares a second
            # conversion (schema_arrow), ~0.05 ms per fragment. A misfit is decoded for nothing,
            # but then the whole bin starts over anyway.
            if known:
                self._fits(inp, expected, table.schema)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        _check_decoded(inp, expected, table.num_rows, "the file")
        return table

    def _whole(self, footer: Footer, schema: pa.Schema) -> pa.Table:
        table = self._whole_raw(footer)
        if table.num_rows == 0:
            return table  # nothing to cast (only a known schema lets empty inputs get here)
        return self._conform(footer.input, table, schema)

    def _batch(self, footers: Sequence[Footer], schema: pa.Schema) -> Piece:
        """Several small whole inputs as one piece: one task, one cast per distinct input schema
        and one contiguous table, instead of one of each per input. On 20,000 fragments of ~100
        rows, a task and a cast per input cost more than decoding them (bench/RESULTS.md)."""
        decoded = [(f.input, self._whole_raw(f)) for f in footers]
        decoded = [(inp, t) for inp, t in decoded if t.num_rows]
        by_schema: dict[str, list[int]] = {}
        for k, (_, t) in enumerate(decoded):
            key = t.schema.to_string(show_field_metadata=False, show_schema_metadata=False)
            by_schema.setdefault(key, []).append(k)
        parts: list[pa.Table | None] = [None] * len(decoded)
        for members in by_schema.values():
            group = pa.concat_tables([decoded[k][1] for k in members]) if len(members) > 1 else decoded[members[0]][1]
            try:
                cast = conform_table(group, schema)
            except (pa.ArrowException, ValueError):
                for k in members:  # name the input that does not cast
                    self._conform(decoded[k][0], decoded[k][1], schema)
                raise
            offset = 0
            for k in members:
                rows = decoded[k][1].num_rows
                parts[k] = cast.slice(offset, rows)
                offset += rows
        spans = tuple((inp.id, t.num_rows) for inp, t in decoded)
        tables = [t for t in parts if t is not None]
        if not tables:
            return Piece(spans, schema.empty_table(), 0)
        table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
        return Piece(spans, *sized(table))

    def _row_group(self, footer: Footer, index: int, schema: pa.Schema) -> pa.Table:
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata)
                table = pf.read_row_group(index, use_threads=False)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        _check_decoded(inp, (footer.row_groups or ())[index][0], table.num_rows, f"row group {index}")
        return self._conform(inp, table, schema)

    def _decode(self, footer: Footer, row_group: int, schema: pa.Schema) -> Piece:
        """A whole input (``row_group`` -1) or one of its row groups, conformed and measured."""
        if row_group < 0:
            return Piece.of(footer.input.id, *sized(self._whole(footer, schema)))
        return Piece.of(footer.input.id, *sized(self._row_group(footer, row_group, schema)))

    def _huge_row_group(self, footer: Footer, index: int, schema: pa.Schema) -> Iterator[pa.Table]:
        # A row group bigger than our budget is decoded in slices, page by page, on this thread.
        # Slices are sized from Parquet's bytes per row, unless the footer says rows decode to far
        # more than those (runs of one value, a repeated dictionary string, huge lists): then they
        # start at one row and grow, at most 8x a slice, up to what the last one measured once
        # conformed (pyarrow takes a new batch size between batches). Not from the footer's
        # estimate: a dictionary string column's statistics say nothing of its longest value.
        # Small slices are also faster: pyarrow decoded 4 GiB of one int64 value in 0.6 s in
        # 3 MiB batches, 5.9 s in 24 MiB ones. A slice of one row past the limit is refused.
        inp = footer.input
        rg_rows, rg_bytes = (footer.row_groups or ())[index]
        target = self._tuning.row_group_bytes // 4
        per_row = max(1, rg_bytes // max(1, rg_rows))
        said = footer.decoded[index] if footer.decoded is not None else 0
        by_size = said > _FOOTER_TRUST * rg_bytes
        batch_rows = 1 if by_size else max(1024, target // per_row)
        decoded = 0
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata, pre_buffer=False, buffer_size=1 << 20)
                self._check_dictionaries(inp, f, pf.metadata, index)
                for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[index], use_threads=True):
                    decoded += batch.num_rows
                    if decoded > rg_rows:  # more than promised: stop before writing any of it
                        break
                    table, nbytes = sized(self._conform(inp, pa.Table.from_batches([batch]), schema))
                    if nbytes > _DECODE_LIMIT and batch.num_rows == 1:
                        widest = max(table.column_names, key=lambda c: table.column(c).get_total_buffer_size())
                        reason = f"in row group {index} holds a row of {nbytes} bytes (row {decoded - 1})"
                        raise DecodeBudgetError(inp.id, inp.path, widest, f"{reason}: {_past_limit()}")
                    yield table
                    by_size = by_size or nbytes > _DECODE_LIMIT
                    if by_size:
                        fit = min(batch_rows * 8, max(1, target * batch.num_rows // max(1, nbytes)))
                        if fit != batch_rows:
                            batch_rows = fit
                            pf.reader.set_batch_size(batch_rows)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        # Pieces already yielded are in an output that the error aborts: nothing half-written.
        _check_decoded(inp, rg_rows, decoded, f"row group {index}")

    @staticmethod
    def _check_dictionaries(inp: InputFile, f: pa.NativeFile, md: pq.FileMetaData, index: int) -> None:
        # A dictionary page is decoded whole before any value that comes from it: one past the
        # limit cannot be sliced. Its size is in its page header only (one small read), looked at
        # for column chunks big enough to hold one.
        rg = md.row_group(index)
        for j in range(rg.num_columns):
            col = rg.column(j)
            offset = col.dictionary_page_offset
            if offset is None or not col.has_dictionary_page or col.total_uncompressed_size <= _DECODE_LIMIT:
                continue
            size = _dictionary_page_bytes(f, offset)
            if size is not None and size > _DECODE_LIMIT:
                reason = f"in row group {index} has a dictionary of {size} bytes, decoded whole: {_past_limit()}"
                raise DecodeBudgetError(inp.id, inp.path, col.path_in_schema, reason)

    @staticmethod
    def _conform(inp: InputFile, table: pa.Table, schema: pa.Schema) -> pa.Table:
        try:
            return conform_table(table, schema)
        except (pa.ArrowException, ValueError) as exc:
            raise SchemaCastError(inp.id, inp.path, str(exc)) from exc

    def pieces(self, footers: Sequence[Footer], schema: pa.Schema) -> Iterator[Piece]:
        if self._on_input_read is None:
            yield from self._pieces(footers, schema)
            return
        by_id = {f.input.id: f.input for f in footers}
        previous: str | None = None
        for piece in self._pieces(footers, schema):
            for input_id, _ in piece.spans:
                if previous is not None and input_id != previous:
                    self._on_input_read(by_id[previous])
                previous = input_id
            yield piece
        if previous is not None:
            self._on_input_read(by_id[previous])

    def _units(self, footer: Footer, ratios: dict[bool, float]) -> tuple[list[tuple[int, int]], bool]:
        """How to read one input: [(estimated Parquet bytes, row group or -1 for whole)], and
        whether the estimate is the file's size (footer not read yet, known schema)."""
        tuning, size = self._tuning, footer.input.size_bytes
        if footer.row_groups is None:
            if size <= tuning.whole_file_max_bytes and size * ratios[True] <= tuning.row_group_bytes:
                return [(max(1, size), -1)], True
            # Too big to read whole: its row groups decide. Big inputs are few, so their footer
            # is read here, on this thread.
            self._load_footer(footer)
        rg_indices = [i for i, (rows, _) in enumerate(footer.row_groups or ()) if rows > 0]
        ratio = ratios[False]
        whole = _decoded_estimate(footer, rg_indices, ratio)
        if not rg_indices or (size <= tuning.whole_file_max_bytes and whole * ratio <= tuning.row_group_bytes):
            return [(whole, -1)], False  # (no rows: only a known schema lets such an input here)
        return [(_decoded_estimate(footer, [i], ratio), i) for i in rg_indices], False

    def _pieces(self, footers: Sequence[Footer], schema: pa.Schema) -> Iterator[Piece]:
        tuning = self._tuning
        budget = tuning.read_ahead_bytes
        batch_limit = tuning.batch_inputs or (64 if isinstance(self._fs, pafs.LocalFileSystem) else 4)
        # Parquet's uncompressed size understates Arrow's decoded size (dictionary strings, list
        # offsets, validity): 1.5-4x on this lake. Learn the ratio from what was decoded so far.
        # Inputs whose footer is not read yet (known schema) are judged by their file size, with
        # a ratio of its own (compressed bytes: higher).
        ratios = {False: 2.0, True: 4.0}
        pending: deque[tuple[Future[Piece], int, int, bool]] = deque()
        in_flight = 0
        batch = _Batch()  # small whole inputs gathered into one task (see _batch)

        def pop() -> Piece:
            nonlocal in_flight
            fut, charged, est, by_file = pending.popleft()
            in_flight -= charged
            piece = fut.result()
            ratios[by_file] = 0.8 * ratios[by_file] + 0.2 * (piece.nbytes / est)
            return piece

        def submit(task: Callable[[], Piece], charged: int, est: int, by_file: bool) -> Iterator[Piece]:
            nonlocal in_flight
            # Wait for the oldest pieces until this one fits the read-ahead budget.
            while pending and in_flight + charged > budget:
                yield pop()
            pending.append((self._pool.submit(task), charged, est, by_file))
            in_flight += charged

        def flush() -> Iterator[Piece]:
            nonlocal batch
            if batch.footers:
                task = functools.partial(self._batch, batch.footers, schema)
                yield from submit(task, batch.charged, batch.est, batch.by_file)
                batch = _Batch()

        try:
            for footer in footers:
                inp = footer.input
                units, by_file = self._units(footer, ratios)
                ratio = ratios[by_file]
                for est, rg in units:
                    charged = int(est * ratio)
                    if rg < 0 and charged <= tuning.batch_bytes:
                        if not batch.takes(charged, by_file, batch_limit, tuning.batch_bytes):
                            yield from flush()
                        batch.add(footer, charged, est, by_file)
                        continue
                    yield from flush()
                    if rg >= 0 and charged > tuning.row_group_bytes:
                        while pending:  # keep order: drain before decoding inline
                            yield pop()
                        for table in self._huge_row_group(footer, rg, schema):
                            yield Piece.of(inp.id, *sized(table))
                        continue
                    yield from submit(functools.partial(self._decode, footer, rg, schema), charged, est, by_file)
            yield from flush()
            while pending:
                yield pop()
        finally:
            for entry in pending:
                entry[0].cancel()
