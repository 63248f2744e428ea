"""The upload checks' arithmetic, pinned (issue 20: the survivors of mutmut over logic/fragment_checks).

``check_fragment`` decodes an upload in slices sized from what the footer says a row takes and
resized on what each slice measures, and counts what the file decodes to as the engine would
hold it (every dictionary written out). The end-to-end tests (test_upload_checks, test_limits_more)
pin the refusals; these pin the parts a refusal alone does not show: the slice sizes (never a
whole row group on a footer's word, growing at most 8 x, never past 8,192 rows, shrinking to one
row when rows are big), the exact byte count, and the footer's depth count when pyarrow cannot
open the file.

The slicing tests replace the footer's estimate (``engine.read.decoded_bytes``) to steer the
first slice and watch the reader's slices; everything else is the real reader on real files.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction.engine import read as engine_read
from fusou_compaction.engine.schema import PYARROW_SCHEMA_DEPTH
from fusou_compaction.logic import fragment_checks
from fusou_compaction.logic.fragment_checks import (
    BATCH_ROWS,
    SLICE_BYTES,
    DecodeBudgetExceeded,
    NestingTooDeep,
    NotParquet,
    UploadLimits,
    _array_sizes,
    _refuse_too_deep_footer,
    check_fragment,
)

from ..hostile_parquet import write

MiB = 1024 * 1024
GENEROUS = UploadLimits(decode_floor_bytes=1 << 40)


class Slices:
    """Wraps the check's reader: the slice size asked for at each step and the rows each slice held."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[Any] = []
        self.rows: list[int] = []
        real = fragment_checks._dictionary_reader

        def spying(data: bytes, md: pq.FileMetaData) -> Any:
            return _Spy(real(data, md), self)

        monkeypatch.setattr(fragment_checks, "_dictionary_reader", spying)


class _Spy:
    def __init__(self, reader: Any, slices: Slices) -> None:
        self._reader, self._slices = reader, slices

    def set_batch_size(self, n: Any) -> None:
        self._slices.asked.append(n)
        self._reader.set_batch_size(n)

    def iter_batches(self, *args: Any, **kwargs: Any) -> Any:
        for batch in self._reader.iter_batches(*args, **kwargs):
            self._slices.rows.append(batch.num_rows)
            yield batch


def footer_says(monkeypatch: pytest.MonkeyPatch, estimate: int) -> None:
    """The footer's estimate of the row group's decoded bytes, whatever the file holds."""
    monkeypatch.setattr(engine_read, "decoded_bytes", lambda md, index: (estimate, None))


def plain_bytes(data: bytes) -> int:
    """What pyarrow decodes the file to, dictionaries written out, as one batch per row group."""
    f = pq.ParquetFile(io.BytesIO(data))
    return sum(
        sum(c.get_total_buffer_size() for c in f.read_row_group(i).combine_chunks().columns)
        for i in range(f.metadata.num_row_groups)
    )


def ints_with_nulls(n: int) -> pa.Table:
    return pa.table({"v": pa.array([None if i % 7 == 0 else i for i in range(n)], pa.int64())})


# -- slices ------------------------------------------------------------------------------------


def test_slices_start_at_one_row_when_the_footer_says_rows_are_big_and_grow_eightfold_to_8192(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 20,000 small rows whose footer says the row group decodes to 1.5 slices per row
    data = write(ints_with_nulls(20_000), row_group_size=20_000)
    footer_says(monkeypatch, SLICE_BYTES * 20_000 * 2 // 3)
    slices = Slices(monkeypatch)
    # When it is checked
    facts = check_fragment(data, GENEROUS)
    # Then the first slice is one row (a whole number of rows), each next one 8 x the last,
    # never past 8,192 rows, and every row is counted once
    assert slices.asked == [1, 8, 64, 512, 4096, BATCH_ROWS]
    assert all(type(n) is int for n in slices.asked)
    assert slices.rows == [1, 8, 64, 512, 4096, 8192, 20_000 - 12_873]
    assert facts.rows == 20_000
    assert facts.decoded_bytes == sum(_fresh(start, n) for start, n in _starts(slices.rows))


def _fresh(start: int, n: int) -> int:
    # Arrow bytes of those rows built anew (a slice would count its parent's buffers)
    values = ints_with_nulls(start + n).column(0).to_pylist()[start:]
    return pa.array(values, pa.int64()).get_total_buffer_size()


def _starts(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for n in sizes:
        out.append((start, n))
        start += n
    return out


def test_the_first_slice_holds_what_the_footer_says_8_mib_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a footer saying 20,000 rows decode to 200 slices' worth
    data = write(ints_with_nulls(20_000), row_group_size=20_000)
    footer_says(monkeypatch, SLICE_BYTES * 200)
    slices = Slices(monkeypatch)
    # When it is checked
    check_fragment(data, GENEROUS)
    # Then the first slice is the 100 rows that make 8 MiB by the footer's word
    assert slices.asked[0] == 100 and slices.rows[0] == 100


def _blobs(sizes_mib: list[tuple[int, int]]) -> bytes:
    """Rows of two binary columns, ``a`` and ``b``, of the given sizes (MiB), incompressible and
    stored plain: the file is as large as its values, so the whole-file budget does not decide."""
    a = [os.urandom(x * MiB) for x, _ in sizes_mib]
    b = [os.urandom(y * MiB) for _, y in sizes_mib]
    table = pa.table({"a": pa.array(a, pa.binary()), "b": pa.array(b, pa.binary())})
    return write(table, compression="none", use_dictionary=False, write_statistics=False)


def test_a_slice_of_big_rows_shrinks_to_one_row_measuring_every_column(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given four rows of 8 MiB + 1 MiB, and a footer that makes the first slice two rows
    data = _blobs([(8, 1)] * 4)
    footer_says(monkeypatch, SLICE_BYTES * 4 // 2)
    slices = Slices(monkeypatch)
    # When it is checked
    facts = check_fragment(data, UploadLimits())
    # Then the two rows measured (18 MiB over both columns) shrink the next slices to one row
    assert slices.rows == [2, 1, 1]
    assert slices.asked == [2, 1]
    assert facts.rows == 4


def test_a_slice_of_several_rows_past_64_mib_is_not_a_row_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two rows of 33 MiB each (66 MiB together, each row under the limit) read as one slice
    data = _blobs([(33, 0), (33, 0)])
    footer_says(monkeypatch, SLICE_BYTES)
    slices = Slices(monkeypatch)
    # When it is checked
    facts = check_fragment(data, UploadLimits())
    # Then it is accepted: only a slice of one row says a row is past the limit
    assert slices.rows[0] == 2 and facts.rows == 2


def test_a_row_past_64_mib_is_named_by_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given rows of 5 MiB, 5 MiB and 65 MiB read a row at a time
    data = _blobs([(5, 0), (5, 0), (65, 0)])
    footer_says(monkeypatch, SLICE_BYTES * 3)
    slices = Slices(monkeypatch)
    # When it is checked
    with pytest.raises(DecodeBudgetExceeded) as exc:
        check_fragment(data, UploadLimits())
    # Then the third row (row 2) is named, with the limit in whole MiB
    assert slices.rows == [1, 1, 1]
    assert str(exc.value).startswith("row 2 of row group 0 decodes to ")
    assert str(exc.value).endswith(": past the 64 MiB one decode may take")
    assert exc.value.details == {"limit": 64 * MiB}


# -- what is counted ---------------------------------------------------------------------------


def test_empty_and_one_row_row_groups_are_counted_and_the_ones_after_them_decoded() -> None:
    # Given row groups of 0, 1 and 3 rows
    t = ints_with_nulls(4)
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, t.schema) as w:
        w.write_table(t.slice(0, 0))
        w.write_table(t.slice(0, 1))
        w.write_table(t.slice(1, 3))
    data = buf.getvalue()
    # When it is checked
    facts = check_fragment(data, GENEROUS)
    # Then every row is counted, and every byte decoded
    assert facts.rows == 4
    assert facts.decoded_bytes == plain_bytes(data) > 0


def test_a_budget_refusal_names_the_budget() -> None:
    # Given a file that decodes to more than the floor, the floor lowered to 1 KiB
    data = write(ints_with_nulls(10_000))
    limits = UploadLimits(decode_floor_bytes=1024, decode_ratio=1)
    # Then it is refused with the budget as its limit
    with pytest.raises(DecodeBudgetExceeded) as exc:
        check_fragment(data, limits)
    assert exc.value.details == {"limit": max(1024, len(data))}
    assert "refused as a decompression bomb" in str(exc.value)


def test_a_value_the_footer_puts_past_64_mib_is_refused_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a footer saying a column's value is past the limit
    monkeypatch.setattr(engine_read, "decoded_bytes", lambda md, index: (0, ("v", "has a value of 70 MiB")))
    # Then the refusal names the column, the row group and the limit
    with pytest.raises(DecodeBudgetExceeded) as exc:
        check_fragment(write(ints_with_nulls(3)), UploadLimits())
    assert str(exc.value) == 'column "v" in row group 0 has a value of 70 MiB: past the 64 MiB one decode may take'
    assert exc.value.details == {"column": "v", "limit": 64 * MiB}


# -- the sizes of decoded arrays: the Arrow layout, dictionaries written out -------------------


def _dict(values: list[Any], t: pa.DataType) -> Any:
    return pa.array(values, t).dictionary_encode()


def _written_out(arr: Any) -> Any:
    return arr.dictionary_decode() if isinstance(arr, pa.DictionaryArray) else arr


@pytest.mark.parametrize(
    "arr",
    [
        _dict(["a", "bbb", None, "cc", "a"] * 3, pa.string()),
        _dict([b"x", b"yy", None, b"x"], pa.binary()),
        _dict([10, 20, None, 10, 10], pa.int64()),
        _dict([b"ab", b"cd", None, b"ab"], pa.binary(2)),
        pa.array(["a", None, "ccc"]),
        pa.array([[1, 2], None, [3]], pa.list_(pa.int64())),
        pa.array([[1, 2], None, [3]], pa.large_list(pa.int64())),
        pa.array([[("k", 1)], None, [("a", 2), ("b", 3)]], pa.map_(pa.string(), pa.int64())),
    ],
    ids=["dict-string", "dict-binary", "dict-int", "dict-fixed", "string", "list", "large-list", "map"],
)
def test_plain_size_is_the_arrow_size_with_dictionaries_written_out(arr: Any) -> None:
    plain, held = _array_sizes(arr)
    assert plain == _written_out(arr).get_total_buffer_size()
    held_here = arr.indices.get_total_buffer_size() if isinstance(arr, pa.DictionaryArray) else plain
    assert held == held_here


def test_nested_sizes_follow_the_layout_and_hold_only_dictionary_indices() -> None:
    # Given three rows (one null) of a list, a large list, a fixed-size list, a map and a struct,
    # each around a dictionary of strings "aaaa" / "b" (indices int32)
    words = _dict(["aaaa", "b", "aaaa", "b"], pa.string())  # 4 values: 5 + 5 + ... bytes written out
    mask = pa.array([False, True, False])
    lst = pa.ListArray.from_arrays(pa.array([0, 2, 2, 4], pa.int32()), words, mask=mask)
    big = pa.LargeListArray.from_arrays(pa.array([0, 2, 2, 4], pa.int64()), words, mask=mask)
    fixed = pa.FixedSizeListArray.from_arrays(words.slice(0, 3), 1, mask=mask)
    keys = _dict(["k", "l", "m", "n"], pa.string())
    mapped = pa.MapArray.from_arrays(pa.array([0, 2, None, 4], pa.int32()), keys, words)  # type: ignore[call-overload]
    struct = pa.StructArray.from_arrays([words.slice(0, 3), pa.array([1, 2, 3], pa.int64())], ["w", "n"], mask=mask)
    # The written-out words: offsets 4 x (4 + 1), 10 characters, a validity bitmap of 1 byte;
    # held: the int32 indices only
    w4_plain, w4_held = 20 + 10 + 1, 16
    # Then each is its offsets (4 or 8 bytes x (rows + 1), none for a fixed-size list), its own
    # bitmap (1 byte) and its children's sizes
    assert _array_sizes(lst) == (16 + 1 + w4_plain, 16 + 1 + w4_held)
    assert _array_sizes(big) == (32 + 1 + w4_plain, 32 + 1 + w4_held)
    flat = fixed.flatten()  # the non-null rows' values only
    assert _array_sizes(fixed) == (1 + _array_sizes(flat)[0], 1 + _array_sizes(flat)[1])
    keys_plain = 20 + 4 + 1  # "k" "l" "m" "n"
    assert _array_sizes(mapped) == (16 + 1 + keys_plain + w4_plain, 16 + 1 + 16 + w4_held)
    # A struct's fields as it hands them over (null where the struct is): "w" is "aaaa", null,
    # "aaaa" (offsets 16, 8 characters, bitmap 1; held: indices 16 and the bitmap), "n" 3 int64
    # and a bitmap
    assert _array_sizes(struct) == (1 + (16 + 8 + 1) + (24 + 1), 1 + (16 + 1) + (24 + 1))


# -- depth, counted from the footer when pyarrow cannot open the file --------------------------


def _chain(levels: int) -> tuple[pa.DataType, Any]:
    """A struct column ``levels`` Parquet levels deep (root and leaf counted), with a sibling leaf
    ahead of the struct below at every level."""
    t: pa.DataType = pa.int64()
    value: Any = 1
    for _ in range(levels - 2):
        t, value = pa.struct([("s", pa.int32()), ("f", t)]), {"s": 0, "f": value}
    return t, value


def _deep_with_siblings(levels: int) -> bytes:
    """Ahead of a column ``levels`` deep: 50 flat columns and a closed group 40 levels deep (a
    count that does not close finished groups counts the deep column deeper than it is)."""
    pre_type, pre_value = _chain(40)
    deep_type, deep_value = _chain(levels)
    columns = {f"c{i}": pa.array([i]) for i in range(50)} | {
        "pre": pa.array([pre_value], pre_type),
        "deep": pa.array([deep_value], deep_type),
    }
    return write(pa.table(columns))


def test_the_footers_depth_counts_siblings_at_their_own_level() -> None:
    # Given a column exactly at the limit, with siblings at every level, and one level deeper
    at, past = _deep_with_siblings(PYARROW_SCHEMA_DEPTH), _deep_with_siblings(PYARROW_SCHEMA_DEPTH + 1)
    # Then the first is within the limit, the second refused with the limit named
    _refuse_too_deep_footer(at)
    with pytest.raises(NestingTooDeep) as exc:
        _refuse_too_deep_footer(past)
    assert exc.value.details == {"limit": PYARROW_SCHEMA_DEPTH}
    assert f"nested {PYARROW_SCHEMA_DEPTH + 1} Parquet levels deep" in str(exc.value)


def test_a_footer_length_pointing_before_the_file_is_not_read_as_a_footer() -> None:
    # Given a too-deep footer whose length field says 16 MiB more than it is (only its fourth
    # byte wrong)
    data = _deep_with_siblings(PYARROW_SCHEMA_DEPTH + 1)
    length = int.from_bytes(data[-8:-4], "little")
    lying = data[:-8] + (length + (1 << 24)).to_bytes(4, "little") + b"PAR1"
    # Then the footer is not decoded from the wrong bytes (nothing refused as too deep: the file is
    # unreadable, which check_fragment answers with NotParquet)
    _refuse_too_deep_footer(lying)
    with pytest.raises(NotParquet):
        check_fragment(lying, UploadLimits())


# -- the cheap checks' words -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["start", "end"])
def test_a_file_missing_either_magic_is_refused_before_it_is_opened(damage: str) -> None:
    # Given a real file with its first or its last four bytes changed
    data = write(ints_with_nulls(3))
    broken = b"PARX" + data[4:] if damage == "start" else data[:-4] + b"PARX"
    # Then it is not Parquet, and the message says which check said so
    with pytest.raises(NotParquet, match=r"^not a Parquet file \(missing PAR1 magic at start or end\)$"):
        check_fragment(broken, UploadLimits())


def test_nesting_past_pyarrows_depth_says_why_that_depth() -> None:
    # Given a column 101 Parquet levels deep, which pyarrow still opens
    t, value = _chain(PYARROW_SCHEMA_DEPTH + 1)
    # Then the refusal names the column, its depth and where the limit comes from
    with pytest.raises(NestingTooDeep) as exc:
        check_fragment(write(pa.table({"deep": pa.array([value], t)})), UploadLimits())
    assert str(exc.value) == (
        f'column "deep" is nested {PYARROW_SCHEMA_DEPTH + 1} Parquet levels deep; at most '
        f"{PYARROW_SCHEMA_DEPTH} (what pyarrow reads by default)"
    )


@pytest.mark.parametrize(
    ("values", "t", "chars"),
    [
        (["ab", "c", "ab", "dddd"] * 16, pa.string(), (2 + 1 + 2 + 4) * 16),
        ([b"ab", b"c", b"ab", b"dddd"] * 16, pa.binary(), (2 + 1 + 2 + 4) * 16),
        (["", ""] * 32, pa.string(), 0),
    ],
    ids=["string", "binary", "empty-strings"],
)
def test_a_text_dictionary_without_nulls_counts_offsets_characters_and_a_bitmap(
    values: list[Any], t: pa.DataType, chars: int
) -> None:
    # Given 64 rows of a dictionary-encoded text column with no nulls
    arr = _dict(values, t)
    # Then written out it counts its characters, offsets of 4 x (64 + 1) and a bitmap of
    # ceil(64 / 8) = 8 bytes (a bound: the engine's conformed columns may carry one)
    assert _array_sizes(arr) == (chars + 4 * 65 + 8, arr.indices.get_total_buffer_size())


def test_twelve_bytes_with_both_magics_are_opened_not_refused_as_missing_them() -> None:
    # Given the smallest shape a Parquet file can have: magic, a footer length of 0, magic
    data = b"PAR1" + (0).to_bytes(4, "little") + b"PAR1"
    # Then it gets past the magic check, and the reader says why it is not Parquet
    with pytest.raises(NotParquet, match=r"^unreadable Parquet: "):
        check_fragment(data, UploadLimits())
