"""The streaming merge: one planned bin of Parquet inputs -> a few large zstd Parquet outputs.

Threads and memory:
- A small pool fetches and decodes inputs ahead of the writer (whole small files as one buffer,
  big files row group by row group), casting each piece to its group's unified schema once.
  Arrow releases the GIL for fetch, decode and cast, so on two cores decoding overlaps encoding.
- The calling thread gathers decoded pieces into row groups (zero-copy) and hands each to an
  encoder pool, which encodes it as a standalone one-row-group Parquet file in memory; the calling
  thread then joins those, in order, into the output (engine/stitch.py: no page is re-encoded).
  pyarrow encodes one file on one thread, so this is what lets one output use every core.
- Memory is bounded by ``read_ahead_bytes`` (decoded but not yet written) plus the row groups of
  ``row_group_bytes`` waiting for or in the encoders; it does not grow with the number or size of
  inputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pyarrow.types as pat

from fusou_compaction.engine.errors import CorruptInputError, EngineError, SchemaCastError
from fusou_compaction.engine.planner import DEFAULT_TARGET_FILE_SIZE, InputFile, MiB, PlannedBin
from fusou_compaction.engine.rowcount import RowCountMismatch, check_decoded, count_rows
from fusou_compaction.engine.schema import (
    conform_table,
    has_duplicate_names,
    merge_schemas,
    normalize_schema,
    schema_fingerprint,
    unify_schemas,
)
from fusou_compaction.engine.stitch import ParquetPart, ParquetStitcher, StitchError
from fusou_compaction.ports.object_store import WritableObject

OpenOutput = Callable[[str], WritableObject]


@dataclass(frozen=True, slots=True)
class MergeTuning:
    """Knobs measured in bench/RESULTS.md; the defaults are what won there."""

    row_group_bytes: int = 12 * MiB  # decoded Arrow bytes per output row group (~1.5-4 MiB zstd here)
    max_row_group_rows: int = 1_048_576
    read_ahead_bytes: int = 12 * MiB  # decoded bytes in flight ahead of the writer
    whole_file_max_bytes: int = 32 * MiB  # inputs up to this size are fetched in one read
    # Concurrent fetch+decode per bin. None: one per CPU (at least 2) on a local disk, 16 on an
    # object store, where each small GET waits ~30 ms and only concurrency hides it (memory stays
    # bounded by read-ahead).
    io_threads: int | None = None
    # Row groups of one output encoded at once (each on its own thread, joined in order after).
    # None: one per available CPU, at most 8; row groups waiting for or in the encoders are capped
    # at this number (memory: that many row groups of row_group_bytes; one more queued bought
    # nothing but memory, bench/RESULTS.md).
    encode_threads: int | None = None
    compression_level: int = 1  # zstd 1: ~25% cheaper to encode than 3 for ~0% size on this data
    dictionary_max_ratio: float = 0.1  # dictionary-encode a leaf column if distinct/values <= this
    statistics: Literal["all", "scalars"] = "scalars"  # see writer_options
    # Parsed footers kept from phase 1 for small inputs, ~30 KB each in memory: memory that grows
    # with the number of inputs, for ~1% CPU saved (bench/RESULTS.md). Inputs read row group by
    # row group always keep theirs (they are few and large).
    cached_footers: int = 0
    delta_encodings: bool = True  # see writer_options
    # Integers inside lists (hp, ship and equipment ids, damage: most of the values in this lake)
    # delta-packed instead of dictionary-encoded: ~6-9% less CPU for the whole run, +4% output
    # (still smaller than every peer); bench/RESULTS.md step 18.
    delta_list_integers: bool = True
    # A CRC32 in every page header (see _encode_part); measured in bench/RESULTS.md.
    page_checksums: bool = True


DEFAULT_TUNING = MergeTuning()


def use_system_allocator() -> None:
    """Make Arrow's Python-level default pool malloc (see engine/_arrow_env.py for the C++ one).

    Call once at start-up of a process that runs compactions (the CLI; the compaction Lambda's
    cold start, which should also set ARROW_DEFAULT_MEMORY_POOL=system in its environment).
    """
    pa.set_memory_pool(pa.system_memory_pool())


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str
    rows: int
    bytes: int
    sha256: str
    schema_fingerprint: str
    input_ids: list[str]  # inputs with at least one row in this output, in upload order
    schema: pa.Schema | None = None  # the output's (unified) schema: callers record it by fingerprint


@dataclass(frozen=True, slots=True)
class BinResult:
    outputs: list[OutputFile]
    rows_in: int
    bytes_in: int
    files_in: int
    # Inputs with zero rows: valid Parquet, nothing to copy. They are consumed by the bin (the
    # pipeline retires them with the rest) but belong to no output.
    consumed_without_output: list[str] = field(default_factory=list)
    # A known schema was given but an input did not fit it: the bin was done again with its
    # footers read first (see compact_bin). Callers log it: the catalog's schema was wrong.
    known_schema_missed: bool = False

    @property
    def rows_out(self) -> int:
        return sum(o.rows for o in self.outputs)

    @property
    def bytes_out(self) -> int:
        return sum(o.bytes for o in self.outputs)


@dataclass(slots=True)
class _Footer:
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


@dataclass(slots=True)
class _Piece:
    input_id: str
    table: pa.Table
    nbytes: int  # decoded Arrow bytes, measured on the decode thread


def _sized(table: pa.Table) -> tuple[pa.Table, int]:
    # get_total_buffer_size: ~5x cheaper than nbytes (no de-duplication of shared buffers), and
    # exact for freshly decoded tables, which share nothing.
    return table, table.get_total_buffer_size()


def _corrupt(inp: InputFile, exc: BaseException) -> CorruptInputError:
    reason = "missing" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
    return CorruptInputError(inp.id, inp.path, reason)


class _SchemaInterner:
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


def _parse_footer(fs: pafs.FileSystem, inp: InputFile) -> tuple[pq.FileMetaData, pa.Schema]:
    try:
        with fs.open_input_file(inp.path) as f:
            pf = pq.ParquetFile(f)
            return pf.metadata, pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise _corrupt(inp, exc) from exc


def _footer_rows(inp: InputFile, md: pq.FileMetaData) -> int:
    """The input's rows counted from its row groups (never the file-level count alone: see
    engine/rowcount.py), checked against the catalog's count when the caller gave one."""
    try:
        rows = count_rows(md).total
    except RowCountMismatch as exc:
        raise CorruptInputError(inp.id, inp.path, str(exc)) from exc
    if inp.row_count is not None and inp.row_count != rows:
        raise CorruptInputError(inp.id, inp.path, f"row groups hold {rows} rows, catalog says {inp.row_count}")
    return rows


def _check_decoded(inp: InputFile, expected: int, decoded: int, where: str) -> None:
    try:
        check_decoded(expected, decoded, where)
    except RowCountMismatch as exc:
        raise CorruptInputError(inp.id, inp.path, str(exc)) from exc


def _row_groups(md: pq.FileMetaData) -> tuple[tuple[int, int], ...]:
    groups = [md.row_group(i) for i in range(md.num_row_groups)]
    return tuple((rg.num_rows, rg.total_byte_size) for rg in groups)


def _read_footer(fs: pafs.FileSystem, inp: InputFile, keep: bool, schemas: _SchemaInterner) -> _Footer:
    md, schema = _parse_footer(fs, inp)
    rows = _footer_rows(inp, md)
    row_groups = _row_groups(md)
    keep = keep or len(row_groups) > 1
    return _Footer(inp, rows, row_groups, schemas.intern(schema), md if keep else None)


class _SchemaMiss(EngineError):
    """An input does not fit the known schema handed to compact_bin, which catches it and starts
    the bin over with phase 1 (never seen by callers)."""

    def __init__(self, input_id: str) -> None:
        super().__init__(f"input {input_id} does not fit the known schema")
        self.input_id = input_id


class _KnownSchema:
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


def _decoded_estimate(footer: _Footer, row_groups: Sequence[int]) -> int:
    # Parquet's uncompressed size: a lower bound of the decoded size, scaled by a learned ratio.
    sizes = footer.row_groups or ()
    return sum(sizes[i][1] for i in row_groups) or 1


class _Reader:
    """Yields an ordered stream of pieces for one schema group, decoding ahead in a pool."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        pool: ThreadPoolExecutor,
        tuning: MergeTuning,
        on_input_read: Callable[[InputFile], None] | None,
        known: _KnownSchema | None = None,
    ) -> None:
        self._fs = fs
        self._pool = pool
        self._tuning = tuning
        self._on_input_read = on_input_read
        self._known = known
        # Known schema: rows per input, learnt when its footer is read (there is no phase 1).
        self.rows: dict[str, int] = {}

    def _check(self, inp: InputFile, md: pq.FileMetaData, schema: pa.Schema) -> int:
        """What phase 1 checks, for an input whose footer is read only now (known schema); its rows."""
        rows = _footer_rows(inp, md)
        self.rows[inp.id] = rows
        if rows > 0 and self._known is not None and not self._known.fits(schema):
            raise _SchemaMiss(inp.id)
        return rows

    def _load_footer(self, footer: _Footer) -> None:
        md, schema = _parse_footer(self._fs, footer.input)
        footer.num_rows = self._check(footer.input, md, schema)
        footer.row_groups, footer.metadata = _row_groups(md), md

    def _whole(self, footer: _Footer, schema: pa.Schema) -> pa.Table:
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                buf = f.read_buffer()
            # The footer we already parsed is reused: ParquetFile over a buffer is ~30% cheaper per
            # small file than pq.read_table (no dataset machinery, no second footer parse).
            pf = pq.ParquetFile(pa.BufferReader(buf), metadata=footer.metadata)
            table = pf.read(use_threads=False)
            # Known schema: this footer was not read before. The decoded table's schema is the
            # footer's Arrow schema: checking it spares a second conversion (pf.schema_arrow),
            # ~0.05 ms per fragment. A misfit is decoded for nothing, but then the whole bin
            # starts over anyway.
            known = footer.row_groups is None
            expected = self._check(inp, pf.metadata, table.schema) if known else footer.num_rows
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        _check_decoded(inp, expected, table.num_rows, "the file")
        if table.num_rows == 0:
            return table  # nothing to cast (only a known schema lets empty inputs get here)
        return self._conform(inp, table, schema)

    def _row_group(self, footer: _Footer, index: int, schema: pa.Schema) -> pa.Table:
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata)
                table = pf.read_row_group(index, use_threads=False)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        _check_decoded(inp, (footer.row_groups or ())[index][0], table.num_rows, f"row group {index}")
        return self._conform(inp, table, schema)

    def _decode(self, footer: _Footer, row_group: int, schema: pa.Schema) -> tuple[pa.Table, int]:
        """A whole input (``row_group`` -1) or one of its row groups, conformed and measured."""
        if row_group < 0:
            return _sized(self._whole(footer, schema))
        return _sized(self._row_group(footer, row_group, schema))

    def _huge_row_group(self, footer: _Footer, index: int, schema: pa.Schema) -> Iterator[pa.Table]:
        # A row group bigger than our budget is decoded in slices, page by page, on this thread.
        inp = footer.input
        rg_rows, rg_bytes = (footer.row_groups or ())[index]
        per_row = max(1, rg_bytes // max(1, rg_rows))
        batch_rows = max(1024, self._tuning.row_group_bytes // 4 // per_row)
        decoded = 0
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata, pre_buffer=False, buffer_size=1 << 20)
                for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[index], use_threads=True):
                    decoded += batch.num_rows
                    if decoded > rg_rows:  # more than promised: stop before writing any of it
                        break
                    yield self._conform(inp, pa.Table.from_batches([batch]), schema)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        # Pieces already yielded are in an output that the error aborts: nothing half-written.
        _check_decoded(inp, rg_rows, decoded, f"row group {index}")

    @staticmethod
    def _conform(inp: InputFile, table: pa.Table, schema: pa.Schema) -> pa.Table:
        try:
            return conform_table(table, schema)
        except (pa.ArrowException, ValueError) as exc:
            raise SchemaCastError(inp.id, inp.path, str(exc)) from exc

    def pieces(self, footers: Sequence[_Footer], schema: pa.Schema) -> Iterator[_Piece]:
        if self._on_input_read is None:
            yield from self._pieces(footers, schema)
            return
        by_id = {f.input.id: f.input for f in footers}
        previous: str | None = None
        for piece in self._pieces(footers, schema):
            if previous is not None and piece.input_id != previous:
                self._on_input_read(by_id[previous])
            previous = piece.input_id
            yield piece
        if previous is not None:
            self._on_input_read(by_id[previous])

    def _units(self, footer: _Footer, ratios: dict[bool, float]) -> tuple[list[tuple[int, int]], bool]:
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
        whole = _decoded_estimate(footer, rg_indices)
        if not rg_indices or (size <= tuning.whole_file_max_bytes and whole * ratios[False] <= tuning.row_group_bytes):
            return [(whole, -1)], False  # (no rows: only a known schema lets such an input here)
        return [(_decoded_estimate(footer, [i]), i) for i in rg_indices], False

    def _pieces(self, footers: Sequence[_Footer], schema: pa.Schema) -> Iterator[_Piece]:
        tuning = self._tuning
        budget = tuning.read_ahead_bytes
        # Parquet's uncompressed size understates Arrow's decoded size (dictionary strings, list
        # offsets, validity): 1.5-4x on this lake. Learn the ratio from what was decoded so far.
        # Inputs whose footer is not read yet (known schema) are judged by their file size, with
        # a ratio of its own (compressed bytes: higher).
        ratios = {False: 2.0, True: 4.0}
        pending: deque[tuple[str, Future[tuple[pa.Table, int]], int, int, bool]] = deque()
        in_flight = 0

        def pop() -> _Piece:
            nonlocal in_flight
            input_id, fut, charged, est, by_file = pending.popleft()
            in_flight -= charged
            table, nbytes = fut.result()
            ratios[by_file] = 0.8 * ratios[by_file] + 0.2 * (nbytes / est)
            return _Piece(input_id, table, nbytes)

        try:
            for footer in footers:
                inp = footer.input
                units, by_file = self._units(footer, ratios)
                ratio = ratios[by_file]
                for est, rg in units:
                    charged = int(est * ratio)
                    # Wait for the oldest pieces until this one fits the read-ahead budget.
                    while pending and in_flight + charged > budget:
                        yield pop()
                    if rg >= 0 and charged > tuning.row_group_bytes:
                        while pending:  # keep order: drain before decoding inline
                            yield pop()
                        for table in self._huge_row_group(footer, rg, schema):
                            yield _Piece(inp.id, *_sized(table))
                        continue
                    fut = self._pool.submit(self._decode, footer, rg, schema)
                    pending.append((inp.id, fut, charged, est, by_file))
                    in_flight += charged
            while pending:
                yield pop()
        finally:
            for entry in pending:
                entry[1].cancel()


def _leaf_columns(
    name: str, arr: pa.ChunkedArray[Any] | pa.Array[Any], in_list: bool = False
) -> Iterator[tuple[str, pa.ChunkedArray[Any] | pa.Array[Any], bool]]:
    """(Parquet column path, values, inside a list?) for every leaf of a column, named as the
    writer names them. Whether a leaf sits under a list is tracked here, not read back from the
    path: a struct field may itself be called "list"."""
    t = arr.type
    if pat.is_struct(t):
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        for i, f in enumerate(t):
            child = pa.chunked_array([c.field(i) for c in chunks], type=f.type)  # type: ignore[attr-defined]
            yield from _leaf_columns(f"{name}.{f.name}", child, in_list)
    elif pat.is_list(t) or pat.is_large_list(t):
        yield from _leaf_columns(f"{name}.list.element", pc.list_flatten(arr), True)
    elif pat.is_map(t):
        return  # rare in this lake: leave maps to the writer's default (dictionary)
    elif pat.is_dictionary(t):
        yield name, arr.cast(t.value_type), in_list
    else:
        yield name, arr, in_list


_DICTIONARY_SAMPLE = 65_536  # leaf values judged per column
_DICTIONARY_PREFIX = 8_192  # see the shortcut in dictionary_columns


def dictionary_columns(table: pa.Table, max_ratio: float, *, list_integers: bool = True) -> list[str]:
    """Leaf columns worth a dictionary, judged on a sample of the first row group.

    Dictionary pages shrink map ids, ship names, small enums and hp lists, and spare zstd work;
    on uuids or random int64 ids they only cost hashing until the writer falls back to plain.
    ``list_integers=False`` leaves integers inside lists out whatever their count of values.
    """
    sample = table.slice(0, min(table.num_rows, _DICTIONARY_SAMPLE))
    chosen: list[str] = []
    for f in sample.schema:
        for path, values, in_list in _leaf_columns(f.name, sample.column(f.name)):
            sample_values = values.slice(0, _DICTIONARY_SAMPLE)
            valid = len(sample_values) - sample_values.null_count
            if pat.is_boolean(values.type) or pat.is_null(values.type):
                continue
            if not list_integers and in_list and pat.is_integer(values.type):
                continue
            limit = max(16, max_ratio * valid)
            # Exact shortcut for uuids and other near-unique values: a prefix that already holds
            # more distinct values than the limit proves the answer (the whole sample holds at
            # least as many), for an eighth of the hashing (~0.15 s a run, bench/RESULTS.md).
            if len(sample_values) > _DICTIONARY_PREFIX and (
                pc.count_distinct(sample_values.slice(0, _DICTIONARY_PREFIX)).as_py() > limit
            ):
                continue
            if valid == 0 or pc.count_distinct(sample_values).as_py() <= limit:
                chosen.append(path)
    return chosen


def writer_options(first: pa.Table, tuning: MergeTuning) -> dict[str, Any]:
    """Per-column encoding choices for one output, decided from its first row group.

    - dictionary where the sample says values repeat (see ``dictionary_columns``), except for
      integers inside lists when ``tuning.delta_list_integers``: hashing every element of every
      list costs more than the dictionary saves over delta packing;
    - statistics on top-level scalar columns (ids, timestamps, map ids: what readers prune on),
      not on list and struct leaves, where min/max prune nothing and cost ~5% of encode time, nor
      on high-cardinality strings (uuids): their min/max span everything, and finding them costs
      a byte comparison per value (~1.5% of the run);
    - DELTA_BINARY_PACKED for timestamps and integers without a dictionary (upload-ordered times
      and ids shrink to a few bits per value, about half the encode cost of zstd on plain int64,
      and smaller); bench/RESULTS.md step 17. Strings without a dictionary (uuids) stay PLAIN:
      DELTA_LENGTH_BYTE_ARRAY was ~40% cheaper on them, but some readers of a lake still refuse it
      (Iceberg's vectorized reader before 1.11, Velox before 2026, Spark's before 3.4), and a file
      nobody can read is worse than 1% of CPU.
    """
    dictionary = dictionary_columns(first, tuning.dictionary_max_ratio, list_integers=not tuning.delta_list_integers)

    def prunable(f: pa.Field[Any]) -> bool:
        if pat.is_nested(f.type):
            return False
        byte_strings = pat.is_string(f.type) or pat.is_large_string(f.type) or pat.is_binary(f.type)
        return not byte_strings or f.name in dictionary  # a dictionary column has few distinct values

    scalars = [f.name for f in first.schema if prunable(f)]
    options: dict[str, Any] = {
        "use_dictionary": dictionary,
        "write_statistics": scalars if tuning.statistics == "scalars" else True,
    }
    if tuning.delta_encodings:
        chosen = set(dictionary)
        encodings: dict[str, str] = {}
        for f in first.schema:
            for path, values, _ in _leaf_columns(f.name, first.column(f.name).slice(0, 0)):
                encoding = _delta_encoding(values.type)
                if encoding and path not in chosen:
                    encodings[path] = encoding
        if encodings:
            options["column_encoding"] = encodings
    return options


def _delta_encoding(t: pa.DataType) -> str | None:
    """The encoding for a leaf the dictionary does not take (too many distinct values), if any."""
    if pat.is_timestamp(t) or pat.is_integer(t):
        return "DELTA_BINARY_PACKED"
    return None


def available_cpus() -> int:
    """CPUs this process may run on (a Lambda's vCPUs; a container's CPU set), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _encode_part(
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


class _OutputWriter:
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


def compact_bin(
    bin_or_inputs: PlannedBin | Sequence[InputFile],
    *,
    source_fs: pafs.FileSystem,
    open_output: OpenOutput,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    name_prefix: str | None = None,
    tuning: MergeTuning = DEFAULT_TUNING,
    on_input_read: Callable[[InputFile], None] | None = None,
    schema: pa.Schema | None = None,
) -> BinResult:
    """Merge one bin's inputs, in order, into outputs named ``f"{name_prefix}-{n:03d}.parquet"``.

    Outputs are numbered per schema group and roll over near ``target_file_size``; the same bin
    always gives the same names, so a retry overwrites its own outputs. On any error every output
    opened here and not yet closed is aborted, and the error propagates (``CorruptInputError``
    names the bad input). ``on_input_read`` is called once per input when all its rows have been
    handed to the writer (zero-row inputs right after the footers): progress reporting.

    ``schema``: the inputs' unified schema, when the caller knows it (the catalog records each
    fragment's schema at upload; the bench gives it to the peers and to ``ours-schema``). Then no
    footer is read ahead: each input is read once, its footer checked as it is decoded (one GET
    per input on S3 instead of two; 5-7% less time in the bench, bench/RESULTS.md step 20). An
    input that does not fit the schema (a column it lacks, a wider type) makes the bin start over
    the usual way, footers first, under the same output names; ``BinResult.known_schema_missed``
    tells. A schema that fits every input gives byte for byte the outputs the usual way gives.
    """
    if isinstance(bin_or_inputs, PlannedBin):
        inputs = list(bin_or_inputs.inputs)
        prefix = name_prefix or f"part-{bin_or_inputs.index:05d}"
    else:
        inputs = list(bin_or_inputs)
        prefix = name_prefix or "part-00000"
    if len({i.id for i in inputs}) != len(inputs):
        raise EngineError("input ids must be unique within a bin")
    run = _BinRun(inputs, prefix, source_fs, open_output, target_file_size, tuning, on_input_read)
    if schema is None or has_duplicate_names(schema):
        return run.discover()
    reported: set[str] = set()
    if on_input_read is not None:
        # Progress is reported once per input, even when the bin starts over.
        report = on_input_read

        def once(inp: InputFile) -> None:
            if inp.id not in reported:
                reported.add(inp.id)
                report(inp)

        run.on_input_read = once
    try:
        # Normalized as phase 1's groups are (plain encodings, no metadata): the same bytes out.
        return run.known(_KnownSchema(normalize_schema(schema)))
    except _SchemaMiss:
        pass  # outside the handler: the retry's errors must not chain to this one
    return replace(run.discover(), known_schema_missed=True)


@dataclass
class _BinRun:
    inputs: list[InputFile]
    prefix: str
    source_fs: pafs.FileSystem
    open_output: OpenOutput
    target_file_size: int
    tuning: MergeTuning
    on_input_read: Callable[[InputFile], None] | None

    def discover(self) -> BinResult:
        """Footers first (phase 1), then one output group per set of schemas that unify."""
        inputs, tuning = self.inputs, self.tuning
        with self._pools() as (pool, encode_pool, io_threads, encode_threads):
            schemas = _SchemaInterner()
            # Footers first (the encoders are idle until then): the larger pool reads them.
            footer_pool = pool if io_threads >= encode_threads else encode_pool
            footers = list(
                footer_pool.map(
                    lambda n: _read_footer(self.source_fs, inputs[n], n < tuning.cached_footers, schemas),
                    range(len(inputs)),
                )
            )
            nonempty = [f for f in footers if f.num_rows > 0]
            empty = [f.input.id for f in footers if f.num_rows == 0]
            if self.on_input_read is not None:
                for f in footers:
                    if f.num_rows == 0:
                        self.on_input_read(f.input)
            reader = _Reader(self.source_fs, pool, tuning, self.on_input_read)
            outputs = self._write(
                [
                    (group.schema, [nonempty[i] for i in group.members])
                    for group in unify_schemas([f.schema for f in nonempty])
                ],
                reader,
                encode_pool,
                encode_threads,
            )
        return BinResult(
            outputs=outputs,
            rows_in=sum(f.num_rows for f in footers),
            bytes_in=sum(i.size_bytes for i in self.inputs),
            files_in=len(self.inputs),
            consumed_without_output=empty,
        )

    def known(self, known: _KnownSchema) -> BinResult:
        """One group under the known schema; each footer is read when its input is decoded."""
        footers = [_Footer(i, -1, None, known.schema, None) for i in self.inputs]
        with self._pools() as (pool, encode_pool, _, encode_threads):
            reader = _Reader(self.source_fs, pool, self.tuning, self.on_input_read, known)
            outputs = self._write([(known.schema, footers)], reader, encode_pool, encode_threads)
        rows = reader.rows
        return BinResult(
            outputs=outputs,
            rows_in=sum(rows.values()),
            bytes_in=sum(i.size_bytes for i in self.inputs),
            files_in=len(self.inputs),
            consumed_without_output=[i.id for i in self.inputs if rows.get(i.id) == 0],
        )

    @contextlib.contextmanager
    def _pools(self) -> Iterator[tuple[ThreadPoolExecutor, ThreadPoolExecutor, int, int]]:
        local = isinstance(self.source_fs, pafs.LocalFileSystem)
        io_threads = self.tuning.io_threads or (max(2, available_cpus()) if local else 16)
        encode_threads = self.tuning.encode_threads or min(8, available_cpus())
        with (
            ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="fusou-read") as pool,
            ThreadPoolExecutor(max_workers=encode_threads, thread_name_prefix="fusou-encode") as encode_pool,
        ):
            yield pool, encode_pool, io_threads, encode_threads

    def _write(
        self,
        groups: list[tuple[pa.Schema, list[_Footer]]],
        reader: _Reader,
        encode_pool: ThreadPoolExecutor,
        encode_threads: int,
    ) -> list[OutputFile]:
        outputs: list[OutputFile] = []
        opened: list[_OutputWriter] = []
        counter = 0

        def open_next() -> _OutputWriter:
            nonlocal counter
            name = f"{self.prefix}-{counter:03d}.parquet"
            counter += 1
            writer = _OutputWriter(name, self.open_output(name))
            opened.append(writer)
            return writer

        try:
            for schema, members in groups:
                fingerprint = schema_fingerprint(schema)
                group_writer = _GroupWriter(
                    schema,
                    encode_pool,
                    open_next,
                    target_file_size=self.target_file_size,
                    tuning=self.tuning,
                    max_pending=encode_threads,
                )
                for out in group_writer.write(reader.pieces(members, schema)):
                    outputs.append(out.finish(fingerprint, schema))
        except BaseException:
            for writer in opened:
                if not writer.sink.closed:
                    writer.abort()
            raise
        return outputs


class _GroupWriter:
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
        open_next: Callable[[], _OutputWriter],
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
        self._current: _OutputWriter | None = None
        self._chunks: list[pa.Table] = []
        self._chunk_ids: list[str] = []
        self._chunk_rows = 0
        self._chunk_bytes = 0

    def write(self, pieces: Iterator[_Piece]) -> Iterator[_OutputWriter]:
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

    def _add(self, piece: _Piece) -> Iterator[_OutputWriter]:
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
            if not self._chunk_ids or self._chunk_ids[-1] != piece.input_id:
                self._chunk_ids.append(piece.input_id)
            self._chunk_rows += take
            self._chunk_bytes += take * per_row
            offset += take
            if self._chunk_rows >= tuning.max_row_group_rows or self._chunk_bytes >= tuning.row_group_bytes:
                yield from self._flush()

    def _flush(self) -> Iterator[_OutputWriter]:
        if not self._chunks:
            return
        table = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        if self._options is None:
            self._options = writer_options(table, self._tuning)
        part = self._encode_pool.submit(
            _encode_part,
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

    def _place(self) -> Iterator[_OutputWriter]:
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


def _release_free_memory() -> None:
    # Between bins, hand the pages malloc keeps for freed blocks back to the OS (glibc only), so
    # a long run of many bins peaks like a short one instead of drifting up with fragmentation.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True, slots=True)
class BinJob:
    bin: PlannedBin
    open_output: OpenOutput
    name_prefix: str | None = None
    schema: pa.Schema | None = None  # the inputs' unified schema, if known (see compact_bin)


def compact_bins(
    jobs: Sequence[BinJob],
    *,
    source_fs: pafs.FileSystem,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    max_parallel: int = 1,
    tuning: MergeTuning = DEFAULT_TUNING,
    on_input_read: Callable[[InputFile], None] | None = None,
) -> list[BinResult]:
    """Run independent bins, one at a time by default (what the state machine's Map does across
    Lambdas).

    One bin already uses every core (row groups are encoded in parallel), so bins side by side
    (``max_parallel`` > 1) only pay off where one bin cannot keep the cores busy; they multiply
    memory. Results come back in job order; the first error cancels the bins not yet started and
    is raised after the running ones have finished (each aborts its own open outputs).
    """

    def run(job: BinJob) -> BinResult:
        try:
            return compact_bin(
                job.bin,
                source_fs=source_fs,
                open_output=job.open_output,
                target_file_size=target_file_size,
                name_prefix=job.name_prefix,
                tuning=tuning,
                on_input_read=on_input_read,
                schema=job.schema,
            )
        finally:
            _release_free_memory()

    if max_parallel <= 1 or len(jobs) <= 1:
        return [run(j) for j in jobs]
    # Biggest bins first: the longest job starts early and the tail stays short.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].bin.estimated_bytes)
    results: dict[int, BinResult] = {}

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="fusou-bin") as pool:
        futures = {pool.submit(run, jobs[i]): i for i in order}
        try:
            for fut, i in futures.items():
                results[i] = fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [results[i] for i in range(len(jobs))]
