"""Run a bin: one planned bin of Parquet inputs -> a few large zstd Parquet outputs.

The data's way: engine/read.py (footers, decode, conform) -> engine/encodings.py (encoding
choices) -> engine/write.py (encode in parallel, stitch, roll over); this module runs them.


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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.fs as pafs

from fusou_compaction.engine.encodings import dictionary_columns, writer_options
from fusou_compaction.engine.errors import EngineError, UnsupportedInputError
from fusou_compaction.engine.planner import DEFAULT_TARGET_FILE_SIZE, InputFile, PlannedBin
from fusou_compaction.engine.read import Footer, KnownSchema, Reader, SchemaInterner, SchemaMiss, read_footers
from fusou_compaction.engine.schema import (
    first_unsupported,
    has_duplicate_names,
    normalize_schema,
    schema_fingerprint,
    unify_schemas,
    unsupported_column,
)
from fusou_compaction.engine.tuning import DEFAULT_TUNING, MergeTuning, available_cpus, use_system_allocator
from fusou_compaction.engine.write import GroupWriter, OutputFile, OutputWriter
from fusou_compaction.ports.object_store import WritableObject

__all__ = [
    "DEFAULT_TUNING",
    "BinJob",
    "BinResult",
    "MergeTuning",
    "OpenOutput",
    "OutputFile",
    "compact_bin",
    "compact_bins",
    "dictionary_columns",
    "use_system_allocator",
    "writer_options",
]

OpenOutput = Callable[[str], WritableObject]


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
    if schema is None or has_duplicate_names(schema) or unsupported_column(schema) is not None:
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
        return run.known(KnownSchema(normalize_schema(schema)))
    except SchemaMiss:
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
            schemas = SchemaInterner()
            # Footers first (the encoders are idle until then): the larger pool reads them.
            footer_pool = pool if io_threads >= encode_threads else encode_pool
            threads = io_threads if footer_pool is pool else encode_threads
            footers = read_footers(
                self.source_fs, inputs, footer_pool, threads=threads, cached=tuning.cached_footers, schemas=schemas
            )
            nonempty = [f for f in footers if f.num_rows > 0]
            unsupported = first_unsupported([f.schema for f in nonempty])
            if unsupported is not None:  # before any output is opened: nothing to undo
                index, column, reason = unsupported
                bad = nonempty[index].input
                raise UnsupportedInputError(bad.id, bad.path, column, reason)
            empty = [f.input.id for f in footers if f.num_rows == 0]
            if self.on_input_read is not None:
                for f in footers:
                    if f.num_rows == 0:
                        self.on_input_read(f.input)
            reader = Reader(self.source_fs, pool, tuning, self.on_input_read)
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

    def known(self, known: KnownSchema) -> BinResult:
        """One group under the known schema; each footer is read when its input is decoded."""
        footers = [Footer(i, -1, None, known.schema, None) for i in self.inputs]
        with self._pools() as (pool, encode_pool, _, encode_threads):
            reader = Reader(self.source_fs, pool, self.tuning, self.on_input_read, known)
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
        groups: list[tuple[pa.Schema, list[Footer]]],
        reader: Reader,
        encode_pool: ThreadPoolExecutor,
        encode_threads: int,
    ) -> list[OutputFile]:
        outputs: list[OutputFile] = []
        opened: list[OutputWriter] = []
        counter = 0

        def open_next() -> OutputWriter:
            nonlocal counter
            name = f"{self.prefix}-{counter:03d}.parquet"
            counter += 1
            writer = OutputWriter(name, self.open_output(name))
            opened.append(writer)
            return writer

        try:
            for schema, members in groups:
                fingerprint = schema_fingerprint(schema)
                group_writer = GroupWriter(
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
