"""What an upload is checked against before anything is stored (direct and presigned alike).

Cheap checks first, from the footer alone: that it is Parquet at all, its column count, its
column names (UTF-8, not empty, not twice among siblings), its nesting depth, its row counts
(each row group's against its column chunks), and whether a value, a row or a dictionary is
past what one decode may take. Then every row group is decoded, in slices that start from what
the footer says a row takes and grow or shrink on what they measure (never a whole row group at
once: a 1 MB file can decode to gigabytes), counting rows and decoded bytes as it goes: the rows
must be what the row group says, and the decoded bytes stay within the upload's budget.

The checks are the engine's wherever the engine has one (``engine.schema``, ``engine.rowcount``,
``engine.read``), so an upload refused here is one the engine would refuse, quarantine or choke
on; the limits that are the service's own (columns, the decode budget) are settings.

Refusals are typed (``InvalidParquet`` subclasses, each with an error ``code`` the API answers
with 422, and ``details`` naming the column or the limit); a file that is not readable Parquet
is ``NotParquet`` (415).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fusou_compaction.settings import Settings

MiB = 1024 * 1024
# Rows decoded at a time at most; fewer when the footer or a slice says rows are big.
BATCH_ROWS = 8192
# Decoded bytes a slice aims at: a slice of rows this big is decoded, measured and dropped.
SLICE_BYTES = 8 * MiB


class NotParquet(ValueError):
    """The bytes are not a readable Parquet file (bad magic, truncated footer, unreadable pages)."""


class InvalidParquet(ValueError):
    """Readable Parquet that cannot be stored as it is (→ 422 with ``code``)."""

    code: ClassVar[str] = "invalid_parquet"

    def __init__(self, message: str, *, column: str | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.limit = limit

    @property
    def details(self) -> dict[str, Any] | None:
        found = {k: v for k, v in (("column", self.column), ("limit", self.limit)) if v is not None}
        return found or None


class RowCountMismatch(InvalidParquet):
    """Its counts contradict each other or its data: no count of ours could be trusted."""

    code = "row_count_mismatch"


class InvalidColumnName(InvalidParquet):
    """A column name (at any depth) that is not UTF-8, empty, or a sibling's twice."""

    code = "invalid_column_name"


class TooManyColumns(InvalidParquet):
    code = "too_many_columns"


class NestingTooDeep(InvalidParquet):
    code = "nesting_too_deep"


class DecodeBudgetExceeded(InvalidParquet):
    """A value, a row or a dictionary past what one decode may take, or the whole file decoding
    to more than the upload's budget (a decompression bomb)."""

    code = "decode_budget_exceeded"


UPLOAD_REFUSALS: tuple[type[InvalidParquet], ...] = (
    RowCountMismatch,
    InvalidColumnName,
    TooManyColumns,
    NestingTooDeep,
    DecodeBudgetExceeded,
)


@dataclass(frozen=True)
class UploadLimits:
    """The service's own limits (README, "Upload limits"); the engine's are not settings."""

    max_columns: int = 1000  # leaf columns; FUSOU's widest table has ~70
    # A file may decode to at most max(floor, ratio x its size) Arrow bytes: ordinary fragments
    # decode to 2-4x their size; a decompression bomb to thousands of times.
    decode_ratio: int = 64
    decode_floor_bytes: int = 64 * MiB

    @classmethod
    def from_settings(cls, s: Settings) -> UploadLimits:
        return cls(
            max_columns=s.upload_max_columns,
            decode_ratio=s.upload_decode_ratio,
            decode_floor_bytes=s.upload_decode_floor_bytes,
        )

    def decode_budget(self, size: int) -> int:
        return max(self.decode_floor_bytes, self.decode_ratio * size)


@dataclass(frozen=True)
class FragmentFacts:
    rows: int
    schema: pa.Schema
    decoded_bytes: int


_UPLOAD = "upload"  # the engine's errors name an input: the upload is the only one


def check_fragment(data: bytes, limits: UploadLimits) -> FragmentFacts:
    """The fragment's rows, schema and decoded size; raises NotParquet or an InvalidParquet."""
    import pyarrow as pa

    from fusou_compaction.engine.read import open_parquet

    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise NotParquet("not a Parquet file (missing PAR1 magic at start or end)")
    try:
        reader = open_parquet(pa.BufferReader(data))
        md, schema = reader.metadata, reader.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        _refuse_too_deep_footer(data)  # past what the reader opens at all
        raise NotParquet(f"unreadable Parquet: {exc}") from exc
    _check_schema(md, schema, limits)
    rows = _check_counts(md)
    decoded = _check_decode(data, md, rows, limits)
    return FragmentFacts(rows=sum(rows), schema=schema, decoded_bytes=decoded)


def _check_schema(md: pq.FileMetaData, schema: pa.Schema, limits: UploadLimits) -> None:
    from fusou_compaction.engine.schema import PYARROW_SCHEMA_DEPTH, deepest_column, name_problem

    if md.num_columns > limits.max_columns:
        raise TooManyColumns(
            f"the file holds {md.num_columns} columns; an upload may hold at most {limits.max_columns}",
            limit=limits.max_columns,
        )
    bad = name_problem(schema)
    if bad is not None:
        column, why = bad
        raise InvalidColumnName(f'column "{column}" {why}', column=column)
    deepest = deepest_column(schema)
    if deepest is not None and deepest[1] > PYARROW_SCHEMA_DEPTH:
        column, depth = deepest
        raise NestingTooDeep(
            f'column "{column}" is nested {depth} Parquet levels deep; at most {PYARROW_SCHEMA_DEPTH} '
            "(what pyarrow reads by default)",
            column=column,
            limit=PYARROW_SCHEMA_DEPTH,
        )


def _refuse_too_deep_footer(data: bytes) -> None:
    """Raise NestingTooDeep if the footer's schema is deeper than the engine reads at all (its
    reader then refuses to open the file): counted from the Thrift footer, without pyarrow."""
    from fusou_compaction.engine import thrift_compact as tc
    from fusou_compaction.engine.schema import PYARROW_SCHEMA_DEPTH

    try:
        length = int.from_bytes(data[-8:-4], "little")
        footer = tc.decode_struct(data[-8 - length : -8], {2: {}})
        elements = footer.get(2).items  # FileMetaData.schema: the tree, depth first
    except (tc.ThriftError, AttributeError, IndexError, ValueError):
        return
    deepest, stack = 0, list[int]()  # children left at each open level
    for element in elements:
        while stack and stack[-1] == 0:
            stack.pop()
        if stack:
            stack[-1] -= 1
        depth = len(stack) + 1
        deepest = max(deepest, depth)
        children = element.get(5)  # SchemaElement.num_children
        if isinstance(children, int) and children > 0:
            stack.append(children)
    if deepest > PYARROW_SCHEMA_DEPTH:
        raise NestingTooDeep(
            f"the schema is nested {deepest} Parquet levels deep; at most {PYARROW_SCHEMA_DEPTH}",
            limit=PYARROW_SCHEMA_DEPTH,
        )


def _check_counts(md: pq.FileMetaData) -> tuple[int, ...]:
    from fusou_compaction.engine.rowcount import RowCountMismatch as FooterMismatch
    from fusou_compaction.engine.rowcount import count_rows

    try:
        # Rows as readers count them (the row groups'), never the file-level count alone: an early
        # Rust writer left it at 0 (engine/rowcount.py).
        return count_rows(md).row_groups
    except FooterMismatch as exc:
        raise RowCountMismatch(f"inconsistent Parquet: {exc}") from exc


def _check_decode(data: bytes, md: pq.FileMetaData, rows: tuple[int, ...], limits: UploadLimits) -> int:
    """Decode every row group in slices; returns what the file decodes to, in plain Arrow bytes."""
    import pyarrow as pa

    from fusou_compaction.engine.errors import DecodeBudgetError
    from fusou_compaction.engine.planner import InputFile
    from fusou_compaction.engine.read import _DECODE_LIMIT, Reader, decoded_bytes
    from fusou_compaction.engine.rowcount import RowCountMismatch as FooterMismatch
    from fusou_compaction.engine.rowcount import check_decoded

    budget = limits.decode_budget(len(data))
    total = 0
    source = pa.BufferReader(data)
    reader = _dictionary_reader(data, md)
    for index, expected in enumerate(rows):
        estimate, refusal = decoded_bytes(md, index)
        if refusal is not None:
            column, reason = refusal
            message = f'column "{column}" in row group {index} {reason}: {_past(_DECODE_LIMIT)}'
            raise DecodeBudgetExceeded(message, column=column, limit=_DECODE_LIMIT)
        try:
            # A dictionary is decoded whole before any value that comes from it: the engine's check.
            Reader._check_dictionaries(InputFile(id=_UPLOAD, path=_UPLOAD, size_bytes=len(data)), source, md, index)
        except DecodeBudgetError as exc:
            message = f'column "{exc.column}" {exc.reason}'
            raise DecodeBudgetExceeded(message, column=exc.column, limit=_DECODE_LIMIT) from exc
        if expected == 0:
            continue
        batch_rows = max(1, min(BATCH_ROWS, SLICE_BYTES * expected // max(1, estimate)))
        reader.set_batch_size(batch_rows)
        decoded = 0
        try:
            for batch in reader.iter_batches(batch_rows, [index], None, use_threads=False):
                decoded += batch.num_rows
                if decoded > expected:
                    break  # more rows than promised: check_decoded says so below
                plain, held = _sizes(batch)
                total += plain
                if held > _DECODE_LIMIT and batch.num_rows == 1:
                    raise DecodeBudgetExceeded(
                        f"row {decoded - 1} of row group {index} decodes to {held} bytes: {_past(_DECODE_LIMIT)}",
                        limit=_DECODE_LIMIT,
                    )
                if total > budget:
                    raise DecodeBudgetExceeded(
                        f"the file decodes to more than {budget} bytes (max({limits.decode_floor_bytes}, "
                        f"{limits.decode_ratio} x its {len(data)} bytes)): refused as a decompression bomb",
                        limit=budget,
                    )
                fit = max(1, min(BATCH_ROWS, batch_rows * 8, SLICE_BYTES * batch.num_rows // max(1, held)))
                if fit != batch_rows:
                    batch_rows = fit
                    reader.set_batch_size(batch_rows)
        except (pa.ArrowException, OSError) as exc:
            raise NotParquet(f"unreadable Parquet: row group {index}: {exc}") from exc
        try:
            check_decoded(expected, decoded, f"row group {index}")
        except FooterMismatch as exc:
            raise RowCountMismatch(f"inconsistent Parquet: {exc}") from exc
    return total


def _dictionary_reader(data: bytes, md: pq.FileMetaData) -> Any:
    """A reader that hands dictionary-encoded text columns over as dictionaries (indices into the
    dictionary page, never the values repeated): a value of 1 MiB that 2,000 rows point at is
    2,000 indices here, and 2 GB only if written out. Such columns' statistics need not say how
    long their values are (they hold the smallest and largest, not the longest), so a slice sized
    from the footer can hold gigabytes; this way no slice holds more than its indices."""
    import pyarrow as pa
    from pyarrow._parquet import ParquetReader

    from fusou_compaction.engine.schema import READ_SCHEMA_DEPTH

    text = {"BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"}
    paths = sorted(
        {
            md.schema.column(j).path
            for i in range(md.num_row_groups)
            for j in range(md.num_columns)
            if md.row_group(i).column(j).has_dictionary_page and md.schema.column(j).physical_type in text
        }
    )
    reader = ParquetReader()
    # The stubs lack schema_depth_limit (see engine.read.open_parquet).
    reader.open(  # type: ignore[call-arg]
        pa.BufferReader(data),
        read_dictionary=paths or None,
        metadata=md,
        pre_buffer=False,
        schema_depth_limit=READ_SCHEMA_DEPTH,
    )
    return reader


def _sizes(batch: pa.RecordBatch) -> tuple[int, int]:
    """(plain, held): the batch's Arrow bytes with every dictionary written out, as the engine
    holds rows, and what it holds here."""
    plain = held = 0
    for column in batch.columns:
        p, h = _array_sizes(column)
        plain += p
        held += h
    return plain, held


def _array_sizes(arr: pa.Array[Any]) -> tuple[int, int]:  # noqa: PLR0911 (one return per type family)
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pat

    n = len(arr)
    bitmap = (n + 7) // 8
    t = arr.type
    if isinstance(arr, pa.DictionaryArray):
        indices = arr.indices
        held = indices.get_total_buffer_size()
        values: Any = arr.dictionary
        if pat.is_binary(t.value_type) or pat.is_string(t.value_type) or pat.is_large_binary(t.value_type):
            lengths: Any = pc.binary_length(values)
            taken = pc.take(lengths, indices)
            return int(pc.sum(taken).as_py() or 0) + 4 * (n + 1) + bitmap, held
        if pat.is_fixed_size_binary(t.value_type):
            return n * t.value_type.byte_width + bitmap, held
        return _array_sizes(pc.take(values, indices))[0], held
    if isinstance(arr, pa.MapArray):
        keys, items = _array_sizes(arr.keys), _array_sizes(arr.items)
        return 4 * (n + 1) + bitmap + keys[0] + items[0], 4 * (n + 1) + bitmap + keys[1] + items[1]
    if isinstance(arr, pa.ListArray | pa.LargeListArray | pa.FixedSizeListArray):
        inner = _array_sizes(arr.flatten())
        width = 0 if isinstance(arr, pa.FixedSizeListArray) else 8 if isinstance(arr, pa.LargeListArray) else 4
        offsets = width * (n + 1)
        return offsets + bitmap + inner[0], offsets + bitmap + inner[1]
    if isinstance(arr, pa.StructArray):
        fields = [_array_sizes(f) for f in arr.flatten()]
        return bitmap + sum(f[0] for f in fields), bitmap + sum(f[1] for f in fields)
    size = arr.get_total_buffer_size()
    return size, size


def _past(limit: int) -> str:
    return f"past the {limit // MiB} MiB one decode may take"
