"""Decompression bombs: fragments of a few hundred bytes whose row groups decode to gigabytes.

Parquet's uncompressed page bytes (``total_byte_size``) say next to nothing about what runs of one
value, a repeated dictionary string or huge lists decode to, and the engine used to decide from
them how to read an input: a 154-byte file of one int64 value 2^29 times (4 GiB decoded) was read
whole at 4.2 GB of peak memory, a pyarrow-written dictionary string column failed with "overflowed
binary array capacity" at 2.2 GB, and a file holding one 2 GiB string took 8 GB before failing.
The Compact Lambda has 1,769 MB.

The files are built here by hand (Thrift footer, RLE pages: nothing multi-gigabyte is ever
written or held) and each compaction runs in a subprocess, which reports its own peak RSS
(VmHWM). Bound: 300 MB, what a bin of ordinary data peaks at (measured 120-235 MB for these
bombs, against ~70 MB for the interpreter, pyarrow and the engine alone). The subprocess also
gets a 4 GiB address-space limit, so that a regression fails fast instead of filling the machine.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from engine_testkit import output_paths, run_bin

from fusou_compaction.engine import InputFile
from fusou_compaction.engine.errors import DecodeBudgetError, EngineError
from fusou_compaction.engine.read import decoded_bytes
from fusou_compaction.engine.thrift_compact import BINARY, I16, I32, I64, LIST, STRUCT, List, Struct, encode_struct
from fusou_compaction.synth import TABLE_NAMES, WIDE_TABLE_NAMES, fragment_bytes, make_table

MiB = 1 << 20
PEAK_RSS_BOUND = 300 * 1000 * 1000

# --- Parquet by hand (https://github.com/apache/parquet-format/blob/master/src/main/thrift/parquet.thrift)

_BYTE_ARRAY, _INT64 = 6, 2
_PLAIN, _RLE, _RLE_DICTIONARY = 0, 3, 8
_UNCOMPRESSED, _ZSTD = 0, 6
_DATA_PAGE, _DICTIONARY_PAGE = 0, 2
_REQUIRED, _OPTIONAL, _REPEATED = 0, 1, 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _run(count: int, value: int) -> bytes:
    """One RLE run: ``count`` copies of ``value`` (bit width <= 8), however large ``count`` is."""
    return _varint(count << 1) + bytes([value])


def _levels(runs: bytes) -> bytes:
    return struct.pack("<I", len(runs)) + runs  # a data page v1's levels: length, then RLE runs


def _page(kind: int, body: bytes, uncompressed: int, header: tuple[int, int, Struct]) -> bytes:
    return encode_struct(Struct([(1, I32, kind), (2, I32, uncompressed), (3, I32, len(body)), header])) + body


@dataclass
class _Column:
    schema: list[Struct]  # this column's schema elements, outermost first
    path: list[bytes]
    dictionary: bytes  # the dictionary page's body as stored (compressed with ``codec``)
    dictionary_size: int  # ... and its uncompressed size
    entries: int
    data: bytes  # the data page's body, uncompressed: levels, then RLE_DICTIONARY indices
    values: int  # leaf values in the data page
    ptype: int = _INT64
    codec: int = _UNCOMPRESSED
    stats: list[tuple[int, int, Any]] = field(default_factory=list)


def _chunk(col: _Column, offset: int) -> tuple[bytes, Struct, int]:
    dictionary = _page(
        _DICTIONARY_PAGE,
        col.dictionary,
        col.dictionary_size,
        (7, STRUCT, Struct([(1, I32, col.entries), (2, I32, _PLAIN)])),
    )
    data = col.data if col.codec == _UNCOMPRESSED else pa.Codec("zstd").compress(col.data, asbytes=True)
    header = Struct([(1, I32, col.values), (2, I32, _RLE_DICTIONARY), (3, I32, _RLE), (4, I32, _RLE)])
    data_page = _page(_DATA_PAGE, data, len(col.data), (5, STRUCT, header))
    uncompressed = (
        len(dictionary) - len(col.dictionary) + col.dictionary_size + len(data_page) - len(data) + len(col.data)
    )
    meta = [
        (1, I32, col.ptype),
        (2, LIST, List(I32, [_PLAIN, _RLE, _RLE_DICTIONARY])),
        (3, LIST, List(BINARY, col.path)),
        (4, I32, col.codec),
        (5, I64, col.values),
        (6, I64, uncompressed),
        (7, I64, len(dictionary) + len(data_page)),
        (9, I64, offset + len(dictionary)),  # data_page_offset
        (11, I64, offset),  # dictionary_page_offset
    ]
    if col.stats:
        meta.append((12, STRUCT, Struct(col.stats)))
    return dictionary + data_page, Struct([(2, I64, offset), (3, STRUCT, Struct(meta))]), uncompressed


def _write(path: Path, columns: list[_Column], rows: int, row_groups: int = 1) -> Path:
    """A Parquet file of ``row_groups`` identical row groups of ``rows`` rows."""
    out = bytearray(b"PAR1")
    groups = []
    for g in range(row_groups):
        start, chunks, total = len(out), [], 0
        for col in columns:
            body, chunk, uncompressed = _chunk(col, len(out))
            out += body
            chunks.append(chunk)
            total += uncompressed
        groups.append(
            Struct(
                [
                    (1, LIST, List(STRUCT, chunks)),
                    (2, I64, total),
                    (3, I64, rows),
                    (5, I64, start),
                    (6, I64, len(out) - start),
                    (7, I16, g),
                ]
            )
        )
    schema = [Struct([(4, BINARY, b"schema"), (5, I32, len(columns))])] + [e for c in columns for e in c.schema]
    footer = encode_struct(
        Struct(
            [
                (1, I32, 1),
                (2, LIST, List(STRUCT, schema)),
                (3, I64, rows * row_groups),
                (4, LIST, List(STRUCT, groups)),
                (6, BINARY, b"a hand-made bomb"),
            ]
        )
    )
    path.write_bytes(bytes(out + footer + struct.pack("<I", len(footer)) + b"PAR1"))
    return path


def int64_runs(name: str, rows: int, value: int = 7) -> _Column:
    """A required int64 column holding one value ``rows`` times: one dictionary entry, one run."""
    element = Struct([(1, I32, _INT64), (3, I32, _REQUIRED), (4, BINARY, name.encode())])
    entry = struct.pack("<q", value)
    return _Column([element], [name.encode()], entry, len(entry), 1, bytes([1]) + _run(rows, 0), rows)


def _string_element(name: str) -> Struct:
    string = Struct([(1, STRUCT, Struct([]))])  # LogicalType.STRING
    return Struct(
        [(1, I32, _BYTE_ARRAY), (3, I32, _REQUIRED), (4, BINARY, name.encode()), (6, I32, 0), (10, STRUCT, string)]
    )


def repeated_string(name: str, rows: int, text: bytes, *, statistics: bool) -> _Column:
    """A required string column holding ``text`` ``rows`` times, from a one-entry dictionary;
    its min/max statistics (when written) are ``text`` itself, as pyarrow would write them."""
    entry = struct.pack("<I", len(text)) + text
    stats = [(3, I64, 0), (5, BINARY, text), (6, BINARY, text)] if statistics else []
    data = bytes([1]) + _run(rows, 0)
    return _Column([_string_element(name)], [name.encode()], entry, len(entry), 1, data, rows, _BYTE_ARRAY, stats=stats)


def huge_string(name: str, rows: int, size: int) -> _Column:
    """A required string column whose one dictionary entry is ``size`` bytes, zstd-compressed
    (a 2 GiB entry takes ~64 KB), repeated ``rows`` times; no statistics (no writer keeps such
    a value in them)."""
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as z:
        z.write(struct.pack("<I", size))
        block, left = b"x" * (16 * MiB), size
        while left:
            z.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    data = bytes([1]) + _run(rows, 0)
    body = sink.getvalue().to_pybytes()
    return _Column([_string_element(name)], [name.encode()], body, size + 4, 1, data, rows, _BYTE_ARRAY, _ZSTD)


def huge_lists(name: str, rows: int, per_row: int, value: int = 7) -> _Column:
    """An optional list<int64 not null> column: ``rows`` lists of ``per_row`` copies of one value."""
    outer = Struct(
        [
            (3, I32, _OPTIONAL),
            (4, BINARY, name.encode()),
            (5, I32, 1),
            (6, I32, 3),  # ConvertedType.LIST
            (10, STRUCT, Struct([(3, STRUCT, Struct([]))])),  # LogicalType.LIST
        ]
    )
    middle = Struct([(3, I32, _REPEATED), (4, BINARY, b"list"), (5, I32, 1)])
    leaf = Struct([(1, I32, _INT64), (3, I32, _REQUIRED), (4, BINARY, b"element")])
    values = rows * per_row
    repetition = _levels(b"".join(_run(1, 0) + _run(per_row - 1, 1) for _ in range(rows)))
    definition = _levels(_run(values, 2))
    data = repetition + definition + bytes([1]) + _run(values, 0)
    entry = struct.pack("<q", value)
    return _Column([outer, middle, leaf], [name.encode(), b"list", b"element"], entry, len(entry), 1, data, values)


def arrow_dictionary_strings(path: Path, rows: int, text: str) -> Path:
    """The bomb as pyarrow writes it: a dictionary<string> column, read back as one (its Arrow
    schema is in the file), then cast to plain strings to join the others: that cast overflowed."""
    indices = pa.repeat(0, rows).cast(pa.int32())
    table = pa.table({"s": pa.DictionaryArray.from_arrays(indices, pa.array([text]))})
    pq.write_table(table, path, compression="zstd", row_group_size=rows)
    return path


# --- running a bin in a subprocess

_CHILD = r"""
import json, resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fusou_compaction.engine import InputFile, LocalDirSink, compact_bin, use_system_allocator

args = json.loads(sys.argv[1])
paths = [Path(p) for p in args["paths"]]
out = Path(args["out"])
inputs = [InputFile(id=f"in-{i}", path=str(p), size_bytes=p.stat().st_size, seq=i) for i, p in enumerate(paths)]
use_system_allocator()
report = {}
try:
    schema = pq.read_schema(paths[0]) if args["known"] else None
    result = compact_bin(inputs, source_fs=pafs.LocalFileSystem(), open_output=LocalDirSink(out), schema=schema)
    report.update(rows_in=result.rows_in, rows_out=result.rows_out, outputs=[o.name for o in result.outputs],
                  known_schema_missed=result.known_schema_missed)
except Exception as exc:
    report.update(error=type(exc).__name__, message=str(exc), attrs=getattr(exc, "__dict__", {}))
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
report["peak_rss"] = int(status["VmHWM"].split()[0]) * 1024
report["files_left"] = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.exists() else []
print(json.dumps(report))
"""


def compact_in_subprocess(paths: list[Path], out: Path, *, known: bool = False) -> dict[str, Any]:
    args = json.dumps({"paths": [str(p) for p in paths], "out": str(out), "known": known})
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, args], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _first_and_last_rows(path: Path) -> tuple[list[Any], list[Any]]:
    pf = pq.ParquetFile(path)
    first = next(pf.iter_batches(batch_size=2)).column(0).to_pylist()
    last = pf.read_row_group(pf.num_row_groups - 1).column(0)
    return first, last.slice(len(last) - 2).to_pylist()


_HUGE_LIST = [7] * (1 << 18)

# (name, build, rows, a value every row holds); each decodes to 4 GiB (the 3-row-group one to
# 1.2 GB: the 653 KB fragment, 150 M rows of one int64 value)
BOMBS: dict[str, tuple[Callable[[Path], Path], int, Any]] = {
    "int64-runs": (lambda p: _write(p, [int64_runs("v", 1 << 29)], 1 << 29), 1 << 29, 7),
    "int64-runs-3-row-groups": (lambda p: _write(p, [int64_runs("v", 50_000_000)], 50_000_000, 3), 150_000_000, 7),
    "dictionary-string": (
        lambda p: _write(p, [repeated_string("s", 1 << 22, b"x" * 1024, statistics=True)], 1 << 22),
        1 << 22,
        "x" * 1024,
    ),
    "dictionary-string-without-statistics": (
        lambda p: _write(p, [repeated_string("s", 1 << 22, b"x" * 1024, statistics=False)], 1 << 22),
        1 << 22,
        "x" * 1024,
    ),
    "arrow-dictionary-string": (lambda p: arrow_dictionary_strings(p, 1 << 22, "x" * 1024), 1 << 22, "x" * 1024),
    "huge-lists": (lambda p: _write(p, [huge_lists("l", 2048, 1 << 18)], 2048), 2048, _HUGE_LIST),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_bomb_compacts_within_the_memory_of_ordinary_data(tmp_path: Path, bomb: str) -> None:
    # Given a fragment of a few hundred bytes (a few KB for the lists) that decodes to gigabytes
    build, rows, value = BOMBS[bomb]
    (tmp_path / "in").mkdir()
    path = build(tmp_path / "in" / "bomb.parquet")
    assert path.stat().st_size < 500_000

    # When it is compacted in a process of its own
    report = compact_in_subprocess([path], tmp_path / "out")

    # Then every row comes out, within the memory of ordinary data
    assert "error" not in report, report
    assert report["rows_in"] == report["rows_out"] == rows
    assert report["peak_rss"] <= PEAK_RSS_BOUND, f"peak RSS {report['peak_rss'] / 1e6:.0f} MB"
    # And the rows are the input's (first and last two, and the output's own row count)
    (out,) = output_paths(tmp_path / "out")
    assert pq.read_metadata(out).num_rows == rows
    first, last = _first_and_last_rows(out)
    assert first == last == [value, value]


def test_a_bomb_under_a_known_schema_is_read_in_slices_after_its_footer(tmp_path: Path) -> None:
    # Given a bomb whose file is small enough to be read whole by its size alone, and its schema
    (tmp_path / "in").mkdir()
    path = _write(tmp_path / "in" / "bomb.parquet", [int64_runs("v", 1 << 29)], 1 << 29)

    # When compacted with the schema given (no footer is read before decoding)
    report = compact_in_subprocess([path], tmp_path / "out", known=True)

    # Then its footer stops the whole read: the bin starts over footers first, and every row
    # comes out within the same memory
    assert "error" not in report, report
    assert report["known_schema_missed"] is True
    assert report["rows_out"] == 1 << 29
    assert report["peak_rss"] <= PEAK_RSS_BOUND, f"peak RSS {report['peak_rss'] / 1e6:.0f} MB"


# (name, build, column, what the message says)
TOO_BIG: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # One string of 2 GiB (the largest a page can hold), 4 rows: the footer alone says so.
    "a-2GiB-string": (
        lambda p: _write(p, [huge_string("s", 4, (1 << 31) - 64)], 4),
        "s",
        "bytes of pages for 4 values",
    ),
    # A 200 MiB dictionary entry repeated 100 times: the dictionary page, decoded whole before
    # any row, is past the limit (its page header says so).
    "a-200MiB-dictionary": (lambda p: _write(p, [huge_string("s", 100, 200 * MiB)], 100), "s", "has a dictionary of"),
    # One row holding a list of 2^27 int64 values (1 GiB).
    "a-1GiB-list": (
        lambda p: _write(p, [huge_lists("l", 1, 1 << 27)], 1),
        "l.list.element",
        "rows of 1073741824 bytes",
    ),
    # Two 33 MiB strings per row: each column fits, a row does not; found when one row is decoded
    # (so that row and both dictionaries are in memory then: ~280 MB measured, see below).
    "a-row-of-two-33MiB-strings": (
        lambda p: _write(p, [huge_string("a", 10, 33 * MiB), huge_string("b", 10, 33 * MiB)], 10),
        "a",
        "holds a row of",
    ),
}


@pytest.mark.parametrize("known", [False, True], ids=["footers-first", "schema-given"])
@pytest.mark.parametrize("case", list(TOO_BIG))
def test_a_value_too_big_to_decode_is_a_typed_error_naming_the_input(tmp_path: Path, case: str, known: bool) -> None:
    # Given an ordinary fragment, then one holding a value (or a row) no slicing can bring
    # within what one decode may take
    build, column, says = TOO_BIG[case]
    (tmp_path / "in").mkdir()
    bad = build(tmp_path / "in" / "b.parquet")
    ordinary = tmp_path / "in" / "a.parquet"
    pq.write_table(_like(bad), ordinary)

    # When compacted
    report = compact_in_subprocess([ordinary, bad], tmp_path / "out", known=known)

    # Then the run fails with DecodeBudgetError naming the input and the column, before memory
    # runs out, and leaves no output behind
    assert report.get("error") == "DecodeBudgetError", report
    assert report["attrs"]["input_id"] == "in-1"
    assert report["attrs"]["path"] == str(bad)
    assert report["attrs"]["column"] == column
    assert says in report["message"]
    assert "in-1" in report["message"]
    assert "past the 64 MiB one decode may take" in report["message"]
    # (A row found too big once decoded was decoded: 66 MiB, from two 33 MiB dictionaries.)
    bound = 400 * 1000 * 1000 if "holds a row of" in says else PEAK_RSS_BOUND
    assert report["peak_rss"] <= bound, f"peak RSS {report['peak_rss'] / 1e6:.0f} MB"
    assert report["files_left"] == []


def _like(path: Path) -> pa.Table:
    """Two ordinary rows of the bomb's schema."""
    schema = pq.read_schema(path)
    columns: list[Any] = []
    for f in schema:
        if pa.types.is_list(f.type):
            columns.append(pa.array([[1, 2], [3]], f.type))
        elif pa.types.is_string(f.type):
            columns.append(pa.array(["a", "b"], f.type))
        else:
            columns.append(pa.array([1, 2], f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def test_decode_budget_error_is_an_engine_error_that_survives_pickling() -> None:
    err = DecodeBudgetError("in-7", "/lake/x.parquet", "s", "holds a value of 3000000000 bytes")
    back = pickle.loads(pickle.dumps(err))  # noqa: S301  (our own bytes)
    assert isinstance(back, DecodeBudgetError)
    assert isinstance(back, EngineError)
    assert (back.input_id, back.path, back.column, back.reason, str(back)) == (
        "in-7",
        "/lake/x.parquet",
        "s",
        "holds a value of 3000000000 bytes",
        str(err),
    )
    assert "in-7" in str(err) and "/lake/x.parquet" in str(err)


def test_a_bomb_between_ordinary_fragments_keeps_every_row_in_order(tmp_path: Path) -> None:
    # Given ordinary fragments around a bomb of one int64 value 2^24 times (128 MiB decoded:
    # past what one decode may take, so read in slices), all of one schema
    (tmp_path / "in").mkdir()
    before, after = tmp_path / "in" / "a.parquet", tmp_path / "in" / "c.parquet"
    pq.write_table(pa.table({"v": pa.array([1, 2, 3], pa.int64())}), before)
    bomb = _write(tmp_path / "in" / "b.parquet", [int64_runs("v", 1 << 24)], 1 << 24)
    pq.write_table(pa.table({"v": pa.array([4, 5, 6], pa.int64())}), after)
    inputs = [
        InputFile(id=f"in-{i}", path=str(p), size_bytes=p.stat().st_size, seq=i)
        for i, p in enumerate([before, bomb, after])
    ]

    # When compacted
    result = run_bin(inputs, tmp_path / "out")

    # Then every row is there, in upload order
    assert result.rows_out == (1 << 24) + 6
    assert [i for o in result.outputs for i in o.input_ids] == ["in-0", "in-1", "in-2"]
    (out,) = output_paths(tmp_path / "out")
    pf = pq.ParquetFile(out)
    assert next(pf.iter_batches(batch_size=4)).column(0).to_pylist() == [1, 2, 3, 7]
    last = pf.read_row_group(pf.num_row_groups - 1).column(0)
    assert last.slice(len(last) - 4).to_pylist() == [7, 4, 5, 6]
    total = sum(pc.sum(b.column(0)).as_py() for b in pf.iter_batches(batch_size=1 << 20))
    assert total == 1 + 2 + 3 + 7 * (1 << 24) + 4 + 5 + 6


@pytest.mark.parametrize("name", TABLE_NAMES + WIDE_TABLE_NAMES)
def test_the_footer_estimate_of_ordinary_data_is_close_to_what_it_decodes_to(name: str) -> None:
    # Given ordinary fragments of the lake's tables, small and large
    for rows in (100, 20_000):
        pf = pq.ParquetFile(pa.BufferReader(fragment_bytes(make_table(name, rows))))
        # When their footer's estimate is compared with their Arrow bytes
        estimate, refusal = decoded_bytes(pf.metadata, 0)
        actual = pf.read().get_total_buffer_size()
        # Then it is within 2x above (never flagged as a bomb: see read._FOOTER_TRUST)
        assert refusal is None
        assert actual <= estimate <= 2 * actual, (rows, estimate, actual)
