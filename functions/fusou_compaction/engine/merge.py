"""The streaming merge: one planned bin of Parquet inputs -> a few large zstd Parquet outputs.

Threads and memory:
- A small pool fetches and decodes inputs ahead of the writer (whole small files as one buffer,
  big files row group by row group), casting each piece to its group's unified schema once.
  Arrow releases the GIL for fetch, decode and cast, so on two cores decoding overlaps encoding.
- The calling thread only gathers decoded pieces into row groups (zero-copy) and encodes them.
- Memory is bounded by ``read_ahead_bytes`` (decoded but not yet written) plus one row group of
  ``row_group_bytes`` being encoded; it does not grow with the number or size of inputs.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pyarrow.types as pat

from fusou_compaction.engine.errors import CorruptInputError, EngineError, SchemaCastError
from fusou_compaction.engine.planner import DEFAULT_TARGET_FILE_SIZE, MiB, InputFile, PlannedBin
from fusou_compaction.engine.schema import conform_table, schema_fingerprint, unify_schemas
from fusou_compaction.ports.object_store import WritableObject

OpenOutput = Callable[[str], WritableObject]


@dataclass(frozen=True, slots=True)
class MergeTuning:
    """Knobs measured in bench/RESULTS.md; the defaults are what won there."""

    row_group_bytes: int = 48 * MiB  # decoded Arrow bytes per output row group
    max_row_group_rows: int = 1_048_576
    read_ahead_bytes: int = 48 * MiB  # decoded bytes in flight ahead of the writer
    whole_file_max_bytes: int = 32 * MiB  # inputs up to this size are fetched in one read
    io_threads: int = 8  # concurrent fetches: hides object-store latency for small fragments
    compression_level: int = 1  # zstd 1: ~25% cheaper to encode than 3 for ~0% size on this data
    dictionary_max_ratio: float = 0.1  # dictionary-encode a string column if distinct/rows <= this
    write_buffer_bytes: int = 4 * MiB  # the encoder's writes reach the sink in chunks this big


DEFAULT_TUNING = MergeTuning()


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str
    rows: int
    bytes: int
    sha256: str
    schema_fingerprint: str
    input_ids: list[str]  # inputs with at least one row in this output, in upload order


@dataclass(frozen=True, slots=True)
class BinResult:
    outputs: list[OutputFile]
    rows_in: int
    bytes_in: int
    files_in: int
    # Inputs with zero rows: valid Parquet, nothing to copy. They are consumed by the bin (the
    # pipeline retires them with the rest) but belong to no output.
    consumed_without_output: list[str] = field(default_factory=list)

    @property
    def rows_out(self) -> int:
        return sum(o.rows for o in self.outputs)

    @property
    def bytes_out(self) -> int:
        return sum(o.bytes for o in self.outputs)


@dataclass(slots=True)
class _Footer:
    input: InputFile
    metadata: pq.FileMetaData
    schema: pa.Schema


@dataclass(slots=True)
class _Piece:
    input_id: str
    table: pa.Table


def _corrupt(inp: InputFile, exc: BaseException) -> CorruptInputError:
    reason = "missing" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
    return CorruptInputError(inp.id, inp.path, reason)


def _read_footer(fs: pafs.FileSystem, inp: InputFile) -> _Footer:
    try:
        with fs.open_input_file(inp.path) as f:
            pf = pq.ParquetFile(f)
            metadata = pf.metadata
            schema = pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise _corrupt(inp, exc) from exc
    if inp.row_count is not None and inp.row_count != metadata.num_rows:
        raise CorruptInputError(
            inp.id, inp.path, f"footer has {metadata.num_rows} rows, catalog says {inp.row_count}"
        )
    return _Footer(inp, metadata, schema)


def _decoded_estimate(md: pq.FileMetaData, row_groups: Sequence[int]) -> int:
    # Parquet's uncompressed size is close to the decoded Arrow size for this kind of data.
    return sum(md.row_group(i).total_byte_size for i in row_groups) or 1


class _Reader:
    """Yields an ordered stream of pieces for one schema group, decoding ahead in a pool."""

    def __init__(self, fs: pafs.FileSystem, pool: ThreadPoolExecutor, tuning: MergeTuning) -> None:
        self._fs = fs
        self._pool = pool
        self._tuning = tuning

    def _whole(self, footer: _Footer, schema: pa.Schema) -> pa.Table:
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                buf = f.read_buffer()
            table = pq.read_table(pa.BufferReader(buf), use_threads=False)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        return self._conform(inp, table, schema)

    def _row_group(self, footer: _Footer, index: int, schema: pa.Schema) -> pa.Table:
        inp = footer.input
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata)
                table = pf.read_row_group(index, use_threads=False)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc
        return self._conform(inp, table, schema)

    def _huge_row_group(self, footer: _Footer, index: int, schema: pa.Schema) -> Iterator[pa.Table]:
        # A row group bigger than our budget is decoded in slices, page by page, on this thread.
        inp = footer.input
        rg = footer.metadata.row_group(index)
        per_row = max(1, rg.total_byte_size // max(1, rg.num_rows))
        batch_rows = max(1024, self._tuning.row_group_bytes // 4 // per_row)
        try:
            with self._fs.open_input_file(inp.path) as f:
                pf = pq.ParquetFile(f, metadata=footer.metadata, pre_buffer=False, buffer_size=1 << 20)
                for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[index], use_threads=True):
                    yield self._conform(inp, pa.Table.from_batches([batch]), schema)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _corrupt(inp, exc) from exc

    @staticmethod
    def _conform(inp: InputFile, table: pa.Table, schema: pa.Schema) -> pa.Table:
        try:
            return conform_table(table, schema)
        except (pa.ArrowException, ValueError) as exc:
            raise SchemaCastError(inp.id, inp.path, str(exc)) from exc

    def pieces(self, footers: Sequence[_Footer], schema: pa.Schema) -> Iterator[_Piece]:
        budget = self._tuning.read_ahead_bytes
        pending: deque[tuple[str, Future[pa.Table], int]] = deque()
        in_flight = 0
        try:
            for footer in footers:
                md = footer.metadata
                inp = footer.input
                rg_indices = [i for i in range(md.num_row_groups) if md.row_group(i).num_rows > 0]
                units: list[tuple[int, Callable[[], pa.Table] | None, int]] = []
                if inp.size_bytes <= self._tuning.whole_file_max_bytes and (
                    _decoded_estimate(md, rg_indices) <= self._tuning.row_group_bytes
                ):
                    units.append((_decoded_estimate(md, rg_indices), None, -1))
                else:
                    units.extend((_decoded_estimate(md, [i]), None, i) for i in rg_indices)
                for est, _, rg in units:
                    # Wait for the oldest pieces until this one fits the read-ahead budget.
                    while pending and in_flight + est > budget:
                        input_id, fut, done_est = pending.popleft()
                        in_flight -= done_est
                        yield _Piece(input_id, fut.result())
                    if rg >= 0 and est > self._tuning.row_group_bytes:
                        while pending:  # keep order: drain before decoding inline
                            input_id, fut, done_est = pending.popleft()
                            in_flight -= done_est
                            yield _Piece(input_id, fut.result())
                        for table in self._huge_row_group(footer, rg, schema):
                            yield _Piece(inp.id, table)
                        continue
                    if rg < 0:
                        fut = self._pool.submit(self._whole, footer, schema)
                    else:
                        fut = self._pool.submit(self._row_group, footer, rg, schema)
                    pending.append((inp.id, fut, est))
                    in_flight += est
            while pending:
                input_id, fut, _ = pending.popleft()
                yield _Piece(input_id, fut.result())
        finally:
            for _, fut, _ in pending:
                fut.cancel()


class _SinkAdapter:
    """Lets pyarrow write into a WritableObject without ever closing (committing) it."""

    def __init__(self, sink: WritableObject) -> None:
        self._sink = sink
        self.discard = False  # set on abort: late flushes from Arrow's buffers go nowhere

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.discard:
            return len(data)
        return self._sink.write(data)

    def tell(self) -> int:
        return self._sink.tell()

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        pass  # commit is ours to decide

    @property
    def closed(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _low_cardinality_columns(table: pa.Table, max_ratio: float) -> list[str]:
    # Decided once per output from its first row group: dictionary pages pay off for map ids and
    # ship names, and only cost hashing time on uuids.
    chosen: list[str] = []
    for f in table.schema:
        t = f.type
        if not (pat.is_string(t) or pat.is_binary(t) or pat.is_large_string(t)):
            continue
        col = table.column(f.name)
        valid = len(col) - col.null_count
        if valid == 0:
            chosen.append(f.name)
            continue
        sample = col.slice(0, min(len(col), 65_536))
        distinct = pc.count_distinct(sample).as_py()
        if distinct <= max(16, max_ratio * (len(sample) - sample.null_count)):
            chosen.append(f.name)
    return chosen


class _OutputWriter:
    """One output file: opened lazily, rolled over by the caller, aborted on any error."""

    def __init__(self, name: str, sink: WritableObject, schema: pa.Schema, first: pa.Table, tuning: MergeTuning):
        self.name = name
        self.sink = sink
        self.rows = 0
        self.arrow_bytes = 0
        self.input_ids: list[str] = []
        self._seen: set[str] = set()
        self._adapter = _SinkAdapter(sink)
        self._stream = pa.BufferedOutputStream(
            pa.PythonFile(self._adapter, mode="w"), buffer_size=tuning.write_buffer_bytes
        )
        self._writer = pq.ParquetWriter(
            self._stream,
            schema,
            compression="zstd",
            compression_level=tuning.compression_level,
            use_dictionary=_low_cardinality_columns(first, tuning.dictionary_max_ratio),
            write_statistics=True,
        )

    def tell(self) -> int:
        return self._stream.tell()

    def write_row_group(self, table: pa.Table, input_ids: list[str]) -> None:
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows
        self.arrow_bytes += table.nbytes
        for i in input_ids:
            if i not in self._seen:
                self._seen.add(i)
                self.input_ids.append(i)

    def abort(self) -> None:
        self._adapter.discard = True
        for close in (self._writer.close, self._stream.close):
            with contextlib.suppress(Exception):
                close()
        if not self.sink.closed:
            with contextlib.suppress(Exception):
                self.sink.abort()

    def finish(self, fingerprint: str) -> OutputFile:
        self._writer.close()
        self._stream.flush()
        size = self._stream.tell()
        self._stream.close()
        self.sink.close()
        return OutputFile(self.name, self.rows, size, self.sink.sha256, fingerprint, self.input_ids)


def compact_bin(
    bin_or_inputs: PlannedBin | Sequence[InputFile],
    *,
    source_fs: pafs.FileSystem,
    open_output: OpenOutput,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    name_prefix: str | None = None,
    tuning: MergeTuning = DEFAULT_TUNING,
) -> BinResult:
    """Merge one bin's inputs, in order, into outputs named ``f"{name_prefix}-{n:03d}.parquet"``.

    Outputs are numbered per schema group and roll over near ``target_file_size``; the same bin
    always gives the same names, so a retry overwrites its own outputs. On any error every output
    opened here and not yet closed is aborted, and the error propagates (``CorruptInputError``
    names the bad input).
    """
    if isinstance(bin_or_inputs, PlannedBin):
        inputs = list(bin_or_inputs.inputs)
        prefix = name_prefix or f"part-{bin_or_inputs.index:05d}"
    else:
        inputs = list(bin_or_inputs)
        prefix = name_prefix or "part-00000"
    if len({i.id for i in inputs}) != len(inputs):
        raise EngineError("input ids must be unique within a bin")

    outputs: list[OutputFile] = []
    opened: list[_OutputWriter] = []
    counter = 0
    with ThreadPoolExecutor(max_workers=tuning.io_threads, thread_name_prefix="fusou-read") as pool:
        try:
            footers = list(pool.map(lambda i: _read_footer(source_fs, i), inputs))
            nonempty = [f for f in footers if f.metadata.num_rows > 0]
            empty = [f.input.id for f in footers if f.metadata.num_rows == 0]
            reader = _Reader(source_fs, pool, tuning)
            for group in unify_schemas([f.schema for f in nonempty]):
                members = [nonempty[i] for i in group.members]
                fingerprint = schema_fingerprint(group.schema)

                def open_next(first: pa.Table, schema: pa.Schema = group.schema) -> _OutputWriter:
                    nonlocal counter
                    name = f"{prefix}-{counter:03d}.parquet"
                    counter += 1
                    sink = open_output(name)
                    try:
                        writer = _OutputWriter(name, sink, schema, first, tuning)
                    except BaseException:
                        sink.abort()
                        raise
                    opened.append(writer)
                    return writer

                for out in _write_group(reader.pieces(members, group.schema), open_next, target_file_size, tuning):
                    outputs.append(out.finish(fingerprint))
        except BaseException:
            for writer in opened:
                if not writer.sink.closed:
                    writer.abort()
            raise
    return BinResult(
        outputs=outputs,
        rows_in=sum(f.metadata.num_rows for f in footers),
        bytes_in=sum(i.size_bytes for i in inputs),
        files_in=len(inputs),
        consumed_without_output=empty,
    )


def _write_group(
    pieces: Iterator[_Piece],
    open_next: Callable[[pa.Table], _OutputWriter],
    target_file_size: int,
    tuning: MergeTuning,
) -> Iterator[_OutputWriter]:
    """Gather pieces into row groups and write them, rolling to a new output near the target.

    Yields each finished (not yet closed) output; the caller closes it.
    """
    chunks: list[pa.Table] = []
    chunk_ids: list[str] = []
    chunk_rows = 0
    chunk_bytes = 0
    current: _OutputWriter | None = None

    def flush() -> Iterator[_OutputWriter]:
        nonlocal chunks, chunk_ids, chunk_rows, chunk_bytes, current
        if not chunks:
            return
        table = pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0]
        if current is not None and current.rows:
            # Roll over before this row group would push the file past the target.
            ratio = current.tell() / max(1, current.arrow_bytes)
            if current.tell() + ratio * chunk_bytes > target_file_size:
                yield current
                current = None
        if current is None:
            current = open_next(table)
        current.write_row_group(table, chunk_ids)
        chunks, chunk_ids, chunk_rows, chunk_bytes = [], [], 0, 0

    for piece in pieces:
        table = piece.table
        if table.num_rows == 0:
            continue
        per_row = max(1, table.nbytes // table.num_rows)
        offset = 0
        while offset < table.num_rows:
            room = min(
                tuning.max_row_group_rows - chunk_rows,
                max(1, (tuning.row_group_bytes - chunk_bytes) // per_row),
            )
            take = min(room, table.num_rows - offset)
            part = table if (offset == 0 and take == table.num_rows) else table.slice(offset, take)
            chunks.append(part)
            if not chunk_ids or chunk_ids[-1] != piece.input_id:
                chunk_ids.append(piece.input_id)
            chunk_rows += take
            chunk_bytes += take * per_row
            offset += take
            if chunk_rows >= tuning.max_row_group_rows or chunk_bytes >= tuning.row_group_bytes:
                yield from flush()
    yield from flush()
    if current is not None:
        yield current
