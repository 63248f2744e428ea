"""The stitcher and its Thrift codec: footers survive byte for byte, joined parts read back as their concatenation.

Every part here is a standalone Parquet file that pyarrow writes into memory, the way the engine's encoder
threads write them; the joined file is read back by pyarrow, DuckDB and polars, and its footer is checked
against pyarrow's own parser.
"""

from __future__ import annotations

import io
import itertools
import random
import struct as binary
from collections.abc import Callable, Sequence
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusou_compaction.engine import stitch
from fusou_compaction.engine.stitch import ParquetPart, ParquetStitcher, StitchError
from fusou_compaction.engine.thrift_compact import (
    BINARY,
    BYTE,
    DOUBLE,
    FALSE,
    I16,
    I32,
    I64,
    LIST,
    MAP,
    SET,
    STRUCT,
    TRUE,
    UUID,
    List,
    Map,
    Plan,
    Raw,
    Struct,
    ThriftError,
    decode_struct,
    encode_struct,
)

MAGIC = b"PAR1"

# Field ids from parquet.thrift, to read footers the way the spec names them.
FMD_SCHEMA, FMD_NUM_ROWS, FMD_ROW_GROUPS, FMD_KV, FMD_CREATED_BY, FMD_ENCRYPTION = 2, 3, 4, 5, 6, 8
RG_COLUMNS, RG_TOTAL_BYTE_SIZE, RG_NUM_ROWS, RG_FILE_OFFSET, RG_ORDINAL = 1, 2, 3, 5, 7
CC_FILE_PATH, CC_META, CC_CRYPTO = 1, 3, 8
CMD_PATH, CMD_NUM_VALUES, CMD_COMPRESSED, CMD_DATA_PAGE, CMD_DICT_PAGE, CMD_BLOOM = 3, 5, 7, 9, 11, 14

_SHIPS = ["Fubuki", "Kaga", "Akagi", "Nagato", "Mutsu", "Hiei", "日本語"]
_POS_TYPE = pa.struct([("x", pa.int32()), ("cell", pa.string())])


# --- helpers -------------------------------------------------------------------------------------------------------


def _encode(table: pa.Table, *, row_group_size: int | None = None, **options: Any) -> pa.Buffer:
    """One standalone Parquet file in memory, written the way the engine's encoder threads write parts."""
    kwargs: dict[str, Any] = {"compression": "zstd", "write_page_index": False, **options}
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(out, table.schema, **kwargs) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    return out.getvalue()


def _encode_without_row_groups(schema: pa.Schema) -> pa.Buffer:
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(out, schema, compression="zstd", write_page_index=False):
        pass
    return out.getvalue()


def _footer_bytes(file: bytes) -> bytes:
    """The Thrift FileMetaData: the tail is a 4-byte little-endian footer length and the magic."""
    assert file[-4:] == MAGIC
    length = int.from_bytes(file[-8:-4], "little")
    return file[-8 - length : -8]


def _with_footer(file: bytes, footer: bytes) -> bytes:
    body_end = len(file) - 8 - len(_footer_bytes(file))
    return file[:body_end] + footer + len(footer).to_bytes(4, "little") + MAGIC


def _edit_footer(file: bytes, edit: Callable[[Struct], None]) -> bytes:
    footer = decode_struct(_footer_bytes(file))
    edit(footer)
    return _with_footer(file, encode_struct(footer))


def _metadata(file: bytes | pa.Buffer) -> pq.FileMetaData:
    return pq.read_metadata(pa.BufferReader(file))


def _read(file: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(file))


def _stitch_parts(parts: Sequence[ParquetPart]) -> tuple[bytes, int]:
    """The joined file and what ``finish`` returned."""
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)
    for part in parts:
        stitcher.append(part)
    size = stitcher.finish()
    return sink.getvalue(), size


def _stitch(parts: Sequence[bytes | pa.Buffer | memoryview]) -> tuple[bytes, int]:
    return _stitch_parts([ParquetPart(part) for part in parts])


def _pieces(table: pa.Table, sizes: Sequence[int]) -> list[pa.Table]:
    """Consecutive slices of ``table`` with these row counts (which must add up to the table)."""
    assert sum(sizes) == table.num_rows
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [table.slice(start, size) for start, size in zip(starts, sizes, strict=True)]


def _bloom_filter(column: Any) -> tuple[int | None, int | None]:
    """Offset and length of a column chunk's bloom filter (pyarrow-stubs do not declare them yet)."""
    return column.bloom_filter_offset, column.bloom_filter_length


def _statistics(md: pq.FileMetaData, row_group: int, name: str) -> pq.Statistics:
    paths = [md.schema.column(j).path for j in range(md.num_columns)]
    stats = md.row_group(row_group).column(paths.index(name)).statistics
    assert stats is not None
    return stats


def _row_group_rows(md: pq.FileMetaData) -> list[int]:
    return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def _has_raw(value: Any) -> bool:
    if isinstance(value, Raw):
        return True
    if isinstance(value, Struct):
        return any(_has_raw(v) for _, _, v in value.fields)
    if isinstance(value, List):
        return any(_has_raw(v) for v in value.items)
    if isinstance(value, Map):
        return any(_has_raw(k) or _has_raw(v) for k, v in value.items)
    return False


def _sorties(rows: int, seed: int = 7) -> pa.Table:
    """A battle-log-like table: ids, repeating strings (dictionary pages), zoned times, lists, structs, nulls."""
    rng = random.Random(seed)
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "ship": pa.array([rng.choice(_SHIPS) for _ in range(rows)], pa.string()),
            "fleet": pa.array([f"fleet-{i % 4}" for i in range(rows)], pa.string()).dictionary_encode(),
            "hp": pa.array([None if i % 11 == 0 else rng.randint(-30_000, 30_000) for i in range(rows)], pa.int16()),
            "ts": pa.array([1_740_000_000_000 + 1000 * i for i in range(rows)], pa.timestamp("ms", tz="Asia/Tokyo")),
            "hits": pa.array(
                [None if i % 7 == 0 else [rng.randint(0, 200) for _ in range(i % 4)] for i in range(rows)],
                pa.list_(pa.int32()),
            ),
            "pos": pa.array([{"x": i % 13, "cell": rng.choice(_SHIPS)} for i in range(rows)], _POS_TYPE),
            "ok": pa.array([i % 3 == 0 for i in range(rows)], pa.bool_()),
            "note": pa.nulls(rows, pa.string()),
        }
    )


# --- real footers for the codec ------------------------------------------------------------------------------------


def _nested_file() -> pa.Buffer:
    shot_type = pa.struct(
        [("a", pa.int32()), ("b", pa.list_(pa.string())), ("c", pa.struct([("d", pa.bool_())]))],
    )
    table = pa.table(
        {
            "grid": pa.array([[[1, 2], [3]], None, [[]], [[4, None]]], pa.list_(pa.list_(pa.int32()))),
            "shot": pa.array(
                [
                    {"a": 1, "b": ["x", None], "c": {"d": True}},
                    None,
                    {"a": None, "b": [], "c": None},
                    {"a": 4, "b": None, "c": {"d": False}},
                ],
                shot_type,
            ),
            "equip": pa.array([[("gun", 1)], [], None, [("radar", 2), ("gun", 3)]], pa.map_(pa.string(), pa.int64())),
            "dmg": pa.array([[1.5], None, [], [2.0, float("nan")]], pa.large_list(pa.float64())),
        }
    )
    return _encode(table)


def _dictionary_strings_file() -> pa.Buffer:
    rows = 500
    table = pa.table(
        {
            "fleet": pa.array([f"fleet-{i % 4}" for i in range(rows)], pa.string()).dictionary_encode(),
            "tag": pa.array([f"t{i % 3}" for i in range(rows)], pa.dictionary(pa.int8(), pa.string())),
            "ship": pa.array([_SHIPS[i % len(_SHIPS)] for i in range(rows)], pa.string()),
        }
    )
    return _encode(table, use_dictionary=True)


def _zoned_times_file() -> pa.Buffer:
    rows, base = 100, 1_740_000_000
    table = pa.table(
        {
            "naive_s": pa.array([base + i for i in range(rows)], pa.timestamp("s")),
            "tokyo_ms": pa.array([(base + i) * 1000 for i in range(rows)], pa.timestamp("ms", tz="Asia/Tokyo")),
            "utc_us": pa.array([(base + i) * 10**6 for i in range(rows)], pa.timestamp("us", tz="UTC")),
            "ny_ns": pa.array([(base + i) * 10**9 for i in range(rows)], pa.timestamp("ns", tz="America/New_York")),
            "day": pa.array([date(2025, 3, 1 + i % 28) for i in range(rows)], pa.date32()),
            "clock": pa.array([time(12, i % 60, 0) for i in range(rows)], pa.time64("us")),
        }
    )
    return _encode(table)


def _all_null_file() -> pa.Buffer:
    rows = 50
    table = pa.table(
        {
            "nothing": pa.nulls(rows),
            "i": pa.nulls(rows, pa.int64()),
            "s": pa.nulls(rows, pa.string()),
            "l": pa.nulls(rows, pa.list_(pa.int32())),
            "id": pa.array(range(rows), pa.int64()),
        }
    )
    return _encode(table)


def _scalars_file() -> pa.Buffer:
    table = pa.table(
        {
            "price": pa.array([Decimal("1.25"), None, Decimal("-99999999.99")], pa.decimal128(10, 2)),
            "huge": pa.array([Decimal("9" * 40), Decimal(0), None], pa.decimal256(40, 0)),
            "f32": pa.array([1.5, float("nan"), None], pa.float32()),
            "blob": pa.array([b"\x00\xff", b"", None], pa.binary()),
            "uuid": pa.array([bytes(range(16)), bytes(16), None], pa.binary(16)),
            "text": pa.array(["a", "日本語", None], pa.large_string()),
            "u64": pa.array([0, 2**64 - 1, None], pa.uint64()),
            "i8": pa.array([-128, 127, None], pa.int8()),
            "flag": pa.array([True, False, None], pa.bool_()),
        }
    )
    return _encode(table)


def _everything_in_the_footer_file() -> pa.Buffer:
    table = _sorties(500).replace_schema_metadata({"origin": "fusou", "note": "日本語"})
    return _encode(
        table,
        row_group_size=200,
        write_page_index=True,
        bloom_filter_options={"ship": {"ndv": 16, "fpp": 0.01}},
        write_page_checksum=True,
        data_page_version="2.0",
        sorting_columns=[pq.SortingColumn(0)],
    )


SAMPLE_FILES: dict[str, Callable[[], pa.Buffer]] = {
    "nested-lists-structs-maps": _nested_file,
    "dictionary-strings": _dictionary_strings_file,
    "timestamps-with-zones": _zoned_times_file,
    "all-null-columns": _all_null_file,
    "decimals-floats-binary": _scalars_file,
    "statistics-on": lambda: _encode(_sorties(300), write_statistics=True),
    "statistics-off": lambda: _encode(_sorties(300), write_statistics=False),
    "statistics-on-some-columns": lambda: _encode(_sorties(300), write_statistics=["id", "ship"]),
    "several-row-groups": lambda: _encode(_sorties(2000), row_group_size=300, data_page_size=1024),
    "page-index-bloom-checksums-v2-pages": _everything_in_the_footer_file,
    "zero-rows": lambda: _encode(_sorties(0)),
    "no-row-groups": lambda: _encode_without_row_groups(_sorties(0).schema),
}
PLANS: dict[str, Plan] = {"full": None, "stitch-plan": stitch._PLAN}


# --- the codec on real footers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan_name", sorted(PLANS))
@pytest.mark.parametrize("sample", sorted(SAMPLE_FILES))
def test_pyarrow_footers_round_trip_byte_for_byte(sample: str, plan_name: str) -> None:
    # Given the footer of a file pyarrow wrote
    footer = _footer_bytes(SAMPLE_FILES[sample]().to_pybytes())

    # When it is decoded (fully, or only along the stitcher's offset path) and encoded again
    again = encode_struct(decode_struct(footer, PLANS[plan_name]))

    # Then not one byte changed
    assert again == footer


@pytest.mark.parametrize("sample", sorted(SAMPLE_FILES))
def test_decoded_footer_agrees_with_pyarrows_parser(sample: str) -> None:
    # Given a file pyarrow wrote, and pyarrow's own reading of its footer
    file = SAMPLE_FILES[sample]().to_pybytes()
    md = _metadata(file)

    # When the footer is decoded fully and along the stitcher's plan
    full = decode_struct(_footer_bytes(file))
    planned = decode_struct(_footer_bytes(file), stitch._PLAN)

    # Then both hold pyarrow's row counts, offsets and sizes under the spec's field ids
    for footer in (full, planned):
        assert footer.get(FMD_NUM_ROWS) == md.num_rows
        assert footer.get(FMD_CREATED_BY) == md.created_by.encode()
        groups = footer.get(FMD_ROW_GROUPS).items
        assert len(groups) == md.num_row_groups
        for i, rg in enumerate(groups):
            assert rg.get(RG_NUM_ROWS) == md.row_group(i).num_rows
            assert rg.get(RG_TOTAL_BYTE_SIZE) == md.row_group(i).total_byte_size
            chunks = rg.get(RG_COLUMNS).items
            assert len(chunks) == md.num_columns
            for j, chunk in enumerate(chunks):
                col, meta = md.row_group(i).column(j), chunk.get(CC_META)
                assert meta.get(CMD_NUM_VALUES) == col.num_values
                assert meta.get(CMD_COMPRESSED) == col.total_compressed_size
                assert meta.get(CMD_DATA_PAGE) == col.data_page_offset
                assert meta.get(CMD_DICT_PAGE) == col.dictionary_page_offset
                assert meta.get(CMD_BLOOM) == _bloom_filter(col)[0]
    # And the full decode leaves nothing as bytes, while the plan keeps schema and key-value metadata as Raw
    assert not _has_raw(full)
    assert full.get(FMD_SCHEMA).items[0].get(4) == b"schema"
    assert isinstance(planned.get(FMD_SCHEMA), Raw)
    assert isinstance(planned.get(FMD_KV), Raw)


def test_full_decode_reads_the_path_of_every_column() -> None:
    # Given a file with nested columns
    file = _nested_file().to_pybytes()
    md = _metadata(file)

    # When its footer is decoded fully
    chunks = decode_struct(_footer_bytes(file)).get(FMD_ROW_GROUPS).items[0].get(RG_COLUMNS).items

    # Then each column chunk's path_in_schema is the list of names pyarrow reports
    paths = [b".".join(chunk.get(CC_META).get(CMD_PATH).items).decode() for chunk in chunks]
    assert paths == [md.row_group(0).column(j).path_in_schema for j in range(md.num_columns)]


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_every_truncation_of_a_footer_raises_thrift_error(plan_name: str) -> None:
    # Given a real footer (a small one: every prefix is tried)
    footer = _footer_bytes(_encode(pa.table({"id": [1, 2], "ship": ["Kaga", "Akagi"]})).to_pybytes())

    for cut in range(len(footer)):
        # When only its first `cut` bytes are decoded
        # Then the codec refuses them as truncated, never returning a struct
        with pytest.raises(ThriftError):
            decode_struct(footer[:cut], PLANS[plan_name])


@pytest.mark.parametrize("plan_name", sorted(PLANS))
@pytest.mark.parametrize(
    ("wire", "message"),
    [
        pytest.param(b"\x15\x02\x00\x00", "after the struct", id="trailing-byte"),
        pytest.param(b"\x1e\x00", "unknown compact type", id="unknown-field-type"),
        pytest.param(b"\x19\x1e\x00\x00", "unknown compact type", id="unknown-list-element-type"),
        pytest.param(b"\x16" + b"\xff" * 11 + b"\x01\x00", "varint too long", id="endless-varint"),
        pytest.param(b"\x19\x15" + b"\xff" * 11 + b"\x01\x00", "varint too long", id="endless-varint-in-list"),
        pytest.param(b"\x18\x7fabc\x00", "truncated value", id="binary-longer-than-the-buffer"),
        pytest.param(b"\x19\xf5\x10\x02\x00", "truncated", id="long-list-shorter-than-its-size"),
        pytest.param(b"\x1b\x02\x55\x02\x00", "truncated", id="map-shorter-than-its-size"),
        pytest.param(b"", "truncated", id="empty"),
    ],
)
def test_malformed_bytes_raise_thrift_error(wire: bytes, message: str, plan_name: str) -> None:
    # Given bytes that are not one well-formed compact struct
    # When decoded, with or without a plan (a plan skips containers instead of building them)
    # Then a ThriftError says what is wrong
    with pytest.raises(ThriftError, match=message):
        decode_struct(wire, None if plan_name == "full" else {})


def test_deeply_nested_garbage_raises_thrift_error() -> None:
    # Given 5000 struct headers that never close (field 1, type struct, nested)
    wire = b"\x1c" * 5000

    # When decoded
    # Then it is refused as a malformed struct, like any other bad input
    with pytest.raises(ThriftError):
        decode_struct(wire)


# --- the codec on hand-built structs -------------------------------------------------------------------------------


def _fifteen() -> bytes:
    return bytes(2 * i for i in range(15))


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        pytest.param(Struct([(1, I32, 1)]), b"\x15\x02\x00", id="short-header-zigzag-one"),
        pytest.param(Struct([(1, I32, -1)]), b"\x15\x01\x00", id="zigzag-minus-one"),
        pytest.param(Struct([(1, I64, 2**62)]), b"\x16" + b"\x80" * 9 + b"\x01\x00", id="i64-2-pow-62"),
        pytest.param(Struct([(1, I64, -(2**63))]), b"\x16" + b"\xff" * 9 + b"\x01\x00", id="i64-min"),
        pytest.param(Struct([(1, I64, 2**63 - 1)]), b"\x16" + b"\xfe" + b"\xff" * 8 + b"\x01\x00", id="i64-max"),
        pytest.param(Struct([(1, I16, 300)]), b"\x14\xd8\x04\x00", id="two-byte-varint"),
        pytest.param(Struct([(16, I32, 0)]), b"\x05\x20\x00\x00", id="field-id-jump-16-long-header"),
        pytest.param(Struct([(15, I32, 0)]), b"\xf5\x00\x00", id="field-id-jump-15-short-header"),
        pytest.param(Struct([(2, I32, 0), (1, I32, 0)]), b"\x25\x00\x05\x02\x00\x00", id="id-going-down"),
        pytest.param(Struct([(1, TRUE, True), (2, FALSE, False)]), b"\x11\x12\x00", id="bool-fields"),
        pytest.param(Struct([(20, TRUE, True)]), b"\x01\x28\x00", id="bool-field-long-header"),
        pytest.param(Struct([(3, BINARY, b"abc")]), b"\x38\x03abc\x00", id="binary"),
        pytest.param(Struct([(1, BYTE, 0xFF)]), b"\x13\xff\x00", id="byte"),
        pytest.param(
            Struct([(1, DOUBLE, binary.pack("<d", 1.5))]), b"\x17" + binary.pack("<d", 1.5) + b"\x00", id="double"
        ),
        pytest.param(Struct([(1, UUID, bytes(range(16)))]), b"\x1d" + bytes(range(16)) + b"\x00", id="uuid"),
        pytest.param(Struct([(1, LIST, List(I32, [1, 2, 3]))]), b"\x19\x35\x02\x04\x06\x00", id="short-list"),
        pytest.param(
            Struct([(1, LIST, List(I32, list(range(14))))]),
            b"\x19\xe5" + _fifteen()[:14] + b"\x00",
            id="14-items-short-list-header",
        ),
        pytest.param(
            Struct([(1, LIST, List(I32, list(range(15))))]), b"\x19\xf5\x0f" + _fifteen() + b"\x00", id="long-list"
        ),
        pytest.param(Struct([(1, SET, List(BINARY, [b"a"]))]), b"\x1a\x18\x01a\x00", id="set"),
        pytest.param(Struct([(1, LIST, List(TRUE, [1, 2]))]), b"\x19\x21\x01\x02\x00", id="bool-list"),
        pytest.param(Struct([(1, MAP, Map(BINARY, I32, [(b"a", 1)]))]), b"\x1b\x01\x85\x01a\x02\x00", id="map"),
        pytest.param(Struct([(1, MAP, Map(0, 0, []))]), b"\x1b\x00\x00", id="empty-map"),
        pytest.param(Struct([(1, STRUCT, Struct([(1, I32, 1)]))]), b"\x1c\x15\x02\x00\x00", id="nested-struct"),
        pytest.param(Struct([]), b"\x00", id="empty-struct"),
    ],
)
def test_wire_bytes_follow_the_compact_protocol_spec(value: Struct, wire: bytes) -> None:
    # Given a struct and its encoding worked out by hand from the compact-protocol spec
    # When encoded, and the spec bytes decoded
    encoded = encode_struct(value)
    decoded = decode_struct(wire)

    # Then both directions match the spec
    assert encoded == wire
    assert decoded == value


def test_hand_built_struct_with_every_edge_round_trips() -> None:
    # Given a struct with extreme integers, long-form field ids, bools, binary, a long list, a map and nesting
    inner = Struct([(1, I32, -(2**31)), (2, BINARY, b""), (300, I64, 2**63 - 1), (301, FALSE, False)])
    value = Struct(
        [
            (1, I64, -1),
            (2, I64, 2**62),
            (3, I64, -(2**63)),
            (4, I16, -(2**15)),
            (5, TRUE, True),
            (6, FALSE, False),
            (40, BINARY, bytes(range(256)) * 2),
            (41, LIST, List(I64, [(-1) ** i * 2**i for i in range(64)])),
            (42, MAP, Map(BINARY, STRUCT, [(b"kaga", inner), (b"akagi", Struct([]))])),
            (43, STRUCT, Struct([(1, STRUCT, inner), (2, LIST, List(STRUCT, [inner] * 20))])),
            (1000, LIST, List(LIST, [List(I32, []), List(BINARY, [b"x"] * 16)])),
            (-5, DOUBLE, binary.pack("<d", -0.0)),
        ]
    )

    # When encoded and decoded again
    wire = encode_struct(value)
    decoded = decode_struct(wire)

    # Then the struct comes back equal, field for field, and re-encodes to the same bytes
    assert decoded == value
    assert encode_struct(decoded) == wire


_SCALAR_TYPES = [BYTE, I16, I32, I64, DOUBLE, BINARY, UUID]
_CONTAINER_TYPES = [LIST, SET, MAP, STRUCT]


def _thrift_values(ttype: int, depth: int) -> st.SearchStrategy[Any]:  # noqa: PLR0911  (one branch per wire type)
    """Values the codec builds for one wire type (bools inside collections are one raw byte each)."""
    if ttype in (BYTE, TRUE, FALSE):
        return st.integers(0, 255)
    if ttype == I16:
        return st.integers(-(2**15), 2**15 - 1)
    if ttype == I32:
        return st.integers(-(2**31), 2**31 - 1)
    if ttype == I64:
        return st.integers(-(2**63), 2**63 - 1)
    if ttype == DOUBLE:
        return st.binary(min_size=8, max_size=8)
    if ttype == UUID:
        return st.binary(min_size=16, max_size=16)
    if ttype == BINARY:
        return st.binary(max_size=20) | st.binary(min_size=128, max_size=300)
    if ttype == STRUCT:
        return _thrift_structs(depth - 1)
    if ttype in (LIST, SET):
        return _element_types(depth - 1).flatmap(
            lambda et: st.builds(List, st.just(et), st.lists(_thrift_values(et, depth - 1), max_size=18))
        )
    kv = st.tuples(_element_types(depth - 1), _element_types(depth - 1))
    return kv.flatmap(
        lambda t: st.builds(
            Map,
            st.just(t[0]),
            st.just(t[1]),
            st.lists(
                st.tuples(_thrift_values(t[0], depth - 1), _thrift_values(t[1], depth - 1)), min_size=1, max_size=4
            ),
        )
    )


def _element_types(depth: int) -> st.SearchStrategy[int]:
    return st.sampled_from(_SCALAR_TYPES + [TRUE] + (_CONTAINER_TYPES if depth > 0 else []))


@st.composite
def _thrift_structs(draw: st.DrawFn, depth: int = 3) -> Struct:
    fields: list[tuple[int, int, Any]] = []
    for fid in draw(st.lists(st.integers(-40, 300), max_size=6)):
        if draw(st.integers(0, 5)) == 0:
            flag = draw(st.booleans())
            fields.append((fid, TRUE if flag else FALSE, flag))
        else:
            ttype = draw(st.sampled_from(_SCALAR_TYPES + (_CONTAINER_TYPES if depth > 0 else [])))
            fields.append((fid, ttype, draw(_thrift_values(ttype, depth))))
    return Struct(fields)


_plans: st.SearchStrategy[Plan] = st.deferred(
    lambda: st.none() | st.dictionaries(st.integers(-40, 300), _plans.map(lambda p: {} if p is None else p), max_size=4)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_thrift_structs(), _plans)
def test_any_struct_round_trips_under_any_plan(value: Struct, plan: Plan) -> None:
    # Given a random struct (random ids, types, nesting) and a random plan of containers to decode
    wire = encode_struct(value)

    # When decoded fully, and decoded along the plan
    full = decode_struct(wire)
    planned = decode_struct(wire, plan)

    # Then the full decode is the struct itself, and both encode back to the same bytes
    assert full == value
    assert encode_struct(planned) == wire


# --- stitching -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[3000], [1500, 1500], [700, 1, 1299, 600, 400]], ids=["1", "2", "5"])
def test_stitched_slices_read_back_as_the_concatenated_table(sizes: list[int]) -> None:
    # Given a table cut into slices, each written as its own zstd Parquet part with dictionaries and statistics
    table = _sorties(3000)
    parts = [_encode(piece) for piece in _pieces(table, sizes)]

    # When the parts are stitched
    data, _ = _stitch(parts)

    # Then pyarrow reads exactly the table back, one row group per slice
    assert _read(data).equals(table)
    md = _metadata(data)
    assert md.num_rows == table.num_rows
    assert _row_group_rows(md) == sizes


def test_row_groups_are_numbered_and_placed_where_their_bytes_landed() -> None:
    # Given four parts
    table = _sorties(2000)
    parts = [_encode(piece) for piece in _pieces(table, [500, 600, 400, 500])]

    # When stitched
    data, _ = _stitch(parts)

    # Then each row group carries its ordinal, and its file_offset is where its first column chunk starts
    md = _metadata(data)
    groups = decode_struct(_footer_bytes(data)).get(FMD_ROW_GROUPS).items
    assert [rg.get(RG_ORDINAL) for rg in groups] == [0, 1, 2, 3]
    for i, rg in enumerate(groups):
        first = md.row_group(i).column(0)
        assert rg.get(RG_FILE_OFFSET) == (first.dictionary_page_offset or first.data_page_offset)
    # And each row group read alone is its slice
    parquet = pq.ParquetFile(pa.BufferReader(data))
    for i, piece in enumerate(_pieces(table, [500, 600, 400, 500])):
        assert parquet.read_row_group(i).equals(piece)


def test_finish_returns_the_size_of_every_byte_written() -> None:
    # Given three parts and a stitcher writing into a sink
    parts = [ParquetPart(_encode(piece)) for piece in _pieces(_sorties(900), [300, 200, 400])]
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)

    # When the parts are appended one by one, then the footer written
    progress = []
    for part in parts:
        stitcher.append(part)
        progress.append((stitcher.bytes_written, stitcher.rows))
    size = stitcher.finish()

    # Then bytes_written follows the magic plus each part's body, rows add up, and finish returns the file size
    bodies = [part.body_size for part in parts]
    assert progress == [(4 + sum(bodies[: i + 1]), [300, 500, 900][i]) for i in range(3)]
    assert size == len(sink.getvalue()) == stitcher.bytes_written
    assert sink.getvalue()[:4] == MAGIC and sink.getvalue()[-4:] == MAGIC
    assert size == 4 + sum(bodies) + len(_footer_bytes(sink.getvalue())) + 8


def test_a_part_knows_its_rows_and_body() -> None:
    # Given a part written by pyarrow
    file = _encode(_sorties(250)).to_pybytes()

    # When it is parsed
    part = ParquetPart(file)

    # Then its rows are pyarrow's count, and its body is everything between the leading magic and the footer
    assert part.num_rows == 250
    assert bytes(part.body) == file[4 : len(file) - 8 - len(_footer_bytes(file))]
    assert part.body_size == len(part.body)


def test_duckdb_reads_the_stitched_file_like_the_concatenated_table(tmp_path: Path) -> None:
    # Given a stitched file and the same table written as one ordinary Parquet file
    table = _sorties(3000)
    data, _ = _stitch([_encode(piece) for piece in _pieces(table, [1000, 1, 999, 1000])])
    stitched, reference = tmp_path / "stitched.parquet", tmp_path / "reference.parquet"
    stitched.write_bytes(data)
    pq.write_table(table, reference)

    # When DuckDB counts, sums and reads both
    con = duckdb.connect()
    aggregate = (
        "SELECT count(*), sum(id), count(hp), sum(hp), count(DISTINCT ship), sum(len(hits)), sum(pos.x), "
        "count(note), sum(CASE WHEN ok THEN 1 ELSE 0 END), min(ts), max(ts) FROM read_parquet(?)"
    )
    rows = "SELECT * FROM read_parquet(?) ORDER BY id"
    got = con.execute(aggregate, [str(stitched)]).fetchall()
    expected = con.execute(aggregate, [str(reference)]).fetchall()

    # Then the aggregates agree with pyarrow's own and with the reference file, and so does every row
    count, id_sum, hp_count, hp_sum = got[0][:4]
    assert (count, id_sum) == (table.num_rows, pc.sum(table["id"]).as_py())
    assert (hp_count, hp_sum) == (table.num_rows - table["hp"].null_count, pc.sum(table["hp"]).as_py())
    assert got == expected
    assert con.execute(rows, [str(stitched)]).fetchall() == con.execute(rows, [str(reference)]).fetchall()


def test_polars_reads_the_stitched_file_like_the_concatenated_table(tmp_path: Path) -> None:
    # Given a stitched file and the same table written as one ordinary Parquet file
    table = _sorties(3000)
    data, _ = _stitch([_encode(piece) for piece in _pieces(table, [1200, 1800])])
    stitched, reference = tmp_path / "stitched.parquet", tmp_path / "reference.parquet"
    stitched.write_bytes(data)
    pq.write_table(table, reference)

    # When polars reads both
    got = pl.read_parquet(stitched)
    expected = pl.read_parquet(reference)

    # Then they are the same frame, holding the table's ids and ships in order
    assert got.equals(expected)
    assert got["id"].to_list() == table["id"].to_pylist()
    assert got["ship"].to_list() == table["ship"].to_pylist()


def test_row_group_statistics_describe_their_own_row_group() -> None:
    # Given slices of a table (ids ascending, so each slice has its own id range), written with statistics
    table = _sorties(2000)
    sizes = [300, 900, 800]
    pieces = _pieces(table, sizes)
    data, _ = _stitch([_encode(piece, write_statistics=True) for piece in pieces])

    # When pyarrow reads the statistics of each row group of the stitched file
    md = _metadata(data)

    # Then row group i has the min, max and null count of slice i
    for i, piece in enumerate(pieces):
        ids, ships, hp = (_statistics(md, i, name) for name in ("id", "ship", "hp"))
        assert (ids.min, ids.max) == (piece["id"][0].as_py(), piece["id"][-1].as_py())
        bounds = pc.min_max(piece["ship"])
        assert (ships.min, ships.max) == (bounds["min"].as_py(), bounds["max"].as_py())
        assert hp.null_count == piece["hp"].null_count


def test_every_page_and_bloom_filter_offset_points_at_its_parts_bytes() -> None:
    # Given parts with dictionary pages, several data pages per chunk and bloom filters
    table = _sorties(3000)
    options: dict[str, Any] = {
        "data_page_size": 1024,
        "bloom_filter_options": {"id": {"ndv": 1000, "fpp": 0.01}, "ship": {"ndv": 16, "fpp": 0.01}},
    }
    parts = [_encode(piece, **options).to_pybytes() for piece in _pieces(table, [1000, 1000, 1000])]
    assert _bloom_filter(_metadata(parts[0]).row_group(0).column(0))[0] is not None

    # When they are stitched
    data, _ = _stitch(parts)

    # Then every column chunk and bloom filter is at its part's offset plus the bodies before it, holding the
    # same bytes as in the part
    md = _metadata(data)
    before = 0
    for i, part in enumerate(parts):
        part_md = _metadata(part)
        for j in range(md.num_columns):
            new, old = md.row_group(i).column(j), part_md.row_group(0).column(j)
            assert new.data_page_offset == old.data_page_offset + before
            start_new = new.dictionary_page_offset or new.data_page_offset
            start_old = old.dictionary_page_offset or old.data_page_offset
            assert start_new == start_old + before
            n = old.total_compressed_size
            assert data[start_new : start_new + n] == part[start_old : start_old + n]
            assert new.file_offset == (old.file_offset + before if old.file_offset else 0)  # 0 means unset
            (new_bloom, _), (old_bloom, length) = _bloom_filter(new), _bloom_filter(old)
            if old_bloom is not None and length is not None:
                assert new_bloom == old_bloom + before
                assert data[new_bloom : new_bloom + length] == part[old_bloom : old_bloom + length]
        before += ParquetPart(part).body_size
    assert _read(data).equals(table)


def test_duckdb_point_lookups_find_rows_in_every_part_through_bloom_filters(tmp_path: Path) -> None:
    # Given parts with bloom filters on id and ship, stitched
    table = _sorties(3000)
    options: dict[str, Any] = {"bloom_filter_options": {"id": {"ndv": 1000}, "ship": {"ndv": 16}}}
    data, _ = _stitch([_encode(piece, **options) for piece in _pieces(table, [1000, 1000, 1000])])
    path = tmp_path / "stitched.parquet"
    path.write_bytes(data)

    # When DuckDB looks up one id from each part (it prunes row groups with statistics and bloom filters)
    con = duckdb.connect()
    found = [
        con.execute("SELECT count(*) FROM read_parquet(?) WHERE id = ?", [str(path), k]).fetchall()
        for k in (17, 1500, 2999)
    ]
    ships = con.execute("SELECT count(*) FROM read_parquet(?) WHERE ship = 'Kaga'", [str(path)]).fetchall()

    # Then every id is found once, and a string lookup counts what pyarrow counts
    assert found == [[(1,)], [(1,)], [(1,)]]
    assert ships == [(table["ship"].to_pylist().count("Kaga"),)]


def test_parts_with_several_row_groups_keep_them_all_in_order() -> None:
    # Given three parts: one row group, seven row groups (row_group_size 100), and three
    table = _sorties(1200)
    first, middle, last = _pieces(table, [150, 700, 350])
    parts = [_encode(first), _encode(middle, row_group_size=100), _encode(last, row_group_size=120)]

    # When stitched
    data, _ = _stitch(parts)

    # Then the file has all eleven row groups, in order, each holding its rows
    md = _metadata(data)
    assert _row_group_rows(md) == [150] + [100] * 7 + [120, 120, 110]
    assert _read(data).equals(table)
    assert [rg.get(RG_ORDINAL) for rg in decode_struct(_footer_bytes(data)).get(FMD_ROW_GROUPS).items] == list(
        range(11)
    )
    parquet = pq.ParquetFile(pa.BufferReader(data))
    assert parquet.read_row_group(5).equals(table.slice(150 + 400, 100))


def test_zero_row_parts_join_as_empty_row_groups_every_reader_skips(tmp_path: Path) -> None:
    # Given parts between non-empty ones: a zero-row table (pyarrow writes one empty row group) and a file
    # closed before any write (no row group at all)
    table = _sorties(600)
    first, second = _pieces(table, [250, 350])
    empty_group = _encode(table.slice(0, 0))
    no_group = _encode_without_row_groups(table.schema)
    parts = [empty_group, _encode(first), no_group, empty_group, _encode(second), no_group]

    # When stitched
    data, size = _stitch(parts)
    path = tmp_path / "stitched.parquet"
    path.write_bytes(data)

    # Then the empty row groups are kept as they were written, and the no-row-group file adds none
    md, empty_md = _metadata(data), _metadata(empty_group)
    assert _row_group_rows(md) == [0, 250, 0, 350]
    # (an empty row group has no data page: its offset stays 0, unset, instead of moving into another part)
    unset = [empty_md.row_group(0).column(j).data_page_offset for j in range(md.num_columns)]
    assert unset == [0] * md.num_columns
    for i in (0, 2):
        assert [md.row_group(i).column(j).data_page_offset for j in range(md.num_columns)] == unset
    assert size == len(data)
    # And pyarrow, DuckDB and polars all read just the table's rows
    assert _read(data).equals(table)
    con = duckdb.connect()
    assert con.execute("SELECT count(*), sum(id) FROM read_parquet(?)", [str(path)]).fetchall() == [
        (600, sum(range(600)))
    ]
    assert pl.read_parquet(path)["id"].to_list() == list(range(600))


@pytest.mark.parametrize("empty", ["zero-row-table", "no-row-groups"])
def test_only_empty_parts_make_a_valid_empty_file(empty: str, tmp_path: Path) -> None:
    # Given only parts without rows
    schema = _sorties(0).schema
    part = (
        _encode(pa.Table.from_batches([], schema)) if empty == "zero-row-table" else _encode_without_row_groups(schema)
    )

    # When two of them are stitched
    data, size = _stitch([part, part])
    path = tmp_path / "empty.parquet"
    path.write_bytes(data)

    # Then the file is a valid Parquet file with the schema and no rows, in every reader
    assert size == len(data)
    assert _read(data).equals(_sorties(0))
    assert duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchall() == [(0,)]
    assert pl.read_parquet(path).height == 0


def test_a_part_may_be_given_as_bytes_a_pyarrow_buffer_or_a_memoryview() -> None:
    # Given the same two parts as bytes, as pyarrow buffers and as memoryviews
    pieces = _pieces(_sorties(400), [100, 300])
    buffers = [_encode(piece) for piece in pieces]

    # When each form is stitched
    results = [
        _stitch(buffers)[0],
        _stitch([b.to_pybytes() for b in buffers])[0],
        _stitch([memoryview(b.to_pybytes()) for b in buffers])[0],
    ]

    # Then all three files are identical
    assert results[0] == results[1] == results[2]


_KINDS: dict[str, pa.DataType] = {
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "list": pa.list_(pa.int32()),
    "struct": pa.struct([("a", pa.int32()), ("b", pa.string())]),
}
_ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "string": st.sampled_from(["", "Kaga", "日本語", "1-1"]) | st.text(max_size=6),
    "bool": st.booleans(),
    "list": st.lists(st.integers(-(2**31), 2**31 - 1) | st.none(), max_size=4),
    "struct": st.fixed_dictionaries({"a": st.integers(-1000, 1000) | st.none(), "b": st.text(max_size=4) | st.none()}),
}


@st.composite
def _split_tables(draw: st.DrawFn) -> tuple[pa.Table, list[int], dict[str, Any]]:
    """A random table, random cut points (repeats and ends give zero-row slices) and random writer options."""
    rows = draw(st.integers(0, 50))
    fields, arrays = [], []
    for i, kind in enumerate(draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=5))):
        nullable = draw(st.booleans())
        items = (_ITEMS[kind] | st.none()) if nullable else _ITEMS[kind]
        fields.append(pa.field(f"c{i}_{kind}", _KINDS[kind], nullable=nullable))
        arrays.append(pa.array(draw(st.lists(items, min_size=rows, max_size=rows)), _KINDS[kind]))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=5)))
    options = {
        "use_dictionary": draw(st.booleans()),
        "write_statistics": draw(st.booleans()),
        "row_group_size": draw(st.sampled_from([None, 1, 3, 16])),
    }
    return table, cuts, options


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_split_tables())
def test_any_table_cut_anywhere_stitches_back_to_the_table(case: tuple[pa.Table, list[int], dict[str, Any]]) -> None:
    # Given a random table cut at random points (some slices empty), each slice written as a part
    table, cuts, options = case
    bounds = [0, *cuts, table.num_rows]
    parts = [_encode(table.slice(a, b - a), **options) for a, b in itertools.pairwise(bounds)]

    # When the parts are stitched
    data, size = _stitch(parts)

    # Then the file is the table (schema and nullability included), with every part's row groups in order
    assert _read(data).equals(table)
    md = _metadata(data)
    assert md.num_rows == table.num_rows
    assert _row_group_rows(md) == [rows for part in parts for rows in _row_group_rows(_metadata(part))]
    assert size == len(data)


# --- parts that cannot be joined -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not parquet", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(MAGIC, id="magic-only"),
        pytest.param(MAGIC + MAGIC, id="two-magics"),
        pytest.param(MAGIC + b"\x00\x00\x00\x00" + MAGIC, id="empty-footer"),
        pytest.param(MAGIC + b"\xff\xff\xff\x7f" + MAGIC, id="footer-longer-than-the-file"),
        pytest.param(MAGIC + b"\x1e\x00" + b"\x02\x00\x00\x00" + MAGIC, id="footer-not-thrift"),
        pytest.param(b"PARE" + b"\x00" * 20 + b"PARE", id="encrypted-file-magic"),
    ],
)
def test_bytes_that_are_not_parquet_raise_stitch_error(data: bytes) -> None:
    # Given bytes that are not a plain Parquet file
    # When they are parsed as a part
    # Then StitchError says so
    with pytest.raises(StitchError):
        ParquetPart(data)


def test_every_truncation_of_a_part_raises_stitch_error() -> None:
    # Given a small Parquet file
    file = _encode(pa.table({"id": [1, 2, 3], "ship": ["Kaga", "Akagi", "Kaga"]})).to_pybytes()

    for cut in range(len(file)):
        # When only its first `cut` bytes arrive
        # Then it is refused
        with pytest.raises(StitchError):
            ParquetPart(file[:cut])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda f: f[:4] + f[-8:], "outside the file", id="body-lost"),
        pytest.param(lambda f: f[:-8] + (len(f) - 8).to_bytes(4, "little") + MAGIC, "outside", id="footer-over-magic"),
        pytest.param(lambda f: _with_footer(f, _footer_bytes(f)[:-3]), "unreadable footer", id="footer-cut"),
        pytest.param(lambda f: _with_footer(f, _footer_bytes(f) + b"\x00"), "unreadable footer", id="footer-extra"),
    ],
)
def test_a_damaged_footer_raises_stitch_error(damage: Callable[[bytes], bytes], message: str) -> None:
    # Given a Parquet file whose footer was damaged, its tail (length and magic) still well formed
    file = damage(_encode(_sorties(100)).to_pybytes())

    # When it is parsed as a part
    # Then StitchError names the problem
    with pytest.raises(StitchError, match=message):
        ParquetPart(file)


def _narrow(table: pa.Table) -> pa.Table:
    return table.set_column(0, "id", table["id"].cast(pa.int32()))


def _required(table: pa.Table) -> pa.Table:
    return table.cast(table.schema.set(0, pa.field("id", pa.int64(), nullable=False)))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: t.append_column("extra", pa.array([1] * t.num_rows, pa.int8())), id="extra-column"),
        pytest.param(lambda t: t.drop_columns(["note"]), id="missing-column"),
        pytest.param(lambda t: t.rename_columns(["ID", *t.column_names[1:]]), id="renamed-column"),
        pytest.param(_narrow, id="int64-vs-int32"),
        pytest.param(lambda t: t.set_column(1, "ship", t["ship"].cast(pa.binary())), id="string-vs-binary"),
        pytest.param(_required, id="optional-vs-required"),
        pytest.param(lambda t: t.select([1, 0, *range(2, t.num_columns)]), id="column-order"),
    ],
)
def test_a_part_with_another_schema_is_refused_and_nothing_is_written(change: Callable[[pa.Table], pa.Table]) -> None:
    # Given a stitcher that joined one part
    table = _sorties(600)
    first, second, third = _pieces(table, [200, 200, 200])
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)
    stitcher.append(ParquetPart(_encode(first)))
    written, rows = sink.getvalue(), stitcher.rows

    # When a part with another Parquet schema is appended
    with pytest.raises(StitchError, match="different Parquet schema"):
        stitcher.append(ParquetPart(_encode(change(second))))

    # Then nothing was written for it, and the stitcher still joins parts of the first schema
    assert sink.getvalue() == written
    assert (stitcher.bytes_written, stitcher.rows) == (len(written), rows)
    stitcher.append(ParquetPart(_encode(third)))
    stitcher.finish()
    assert _read(sink.getvalue()).equals(pa.concat_tables([first, third]))


def test_a_part_with_a_page_index_is_refused_naming_the_page_index() -> None:
    # Given a stitcher that joined one part, and a part written with a page index
    first, second = _pieces(_sorties(400), [200, 200])
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)
    stitcher.append(ParquetPart(_encode(first)))
    written = sink.getvalue()
    indexed = ParquetPart(_encode(second, write_page_index=True))

    # When it is appended
    with pytest.raises(StitchError, match="page index"):
        stitcher.append(indexed)

    # Then nothing was written for it
    assert sink.getvalue() == written
    assert (stitcher.bytes_written, stitcher.rows) == (len(written), 200)


def _set_file_path(footer: Struct) -> None:
    footer.get(FMD_ROW_GROUPS).items[0].get(RG_COLUMNS).items[1].set(CC_FILE_PATH, BINARY, b"other.parquet")


def _encrypt_chunk(footer: Struct) -> None:
    with_footer_key = Struct([(1, STRUCT, Struct([]))])  # ColumnCryptoMetaData.ENCRYPTION_WITH_FOOTER_KEY
    footer.get(FMD_ROW_GROUPS).items[0].get(RG_COLUMNS).items[2].set(CC_CRYPTO, STRUCT, with_footer_key)


def _drop_chunk_metadata(footer: Struct) -> None:
    chunk = footer.get(FMD_ROW_GROUPS).items[0].get(RG_COLUMNS).items[0]
    chunk.fields = [f for f in chunk.fields if f[0] != CC_META]


def _miscount_rows(footer: Struct) -> None:
    footer.set(FMD_NUM_ROWS, I64, footer.get(FMD_NUM_ROWS) + 1)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(_set_file_path, "another file", id="chunk-in-another-file"),
        pytest.param(_encrypt_chunk, "encrypted column chunk", id="encrypted-chunk"),
        pytest.param(_drop_chunk_metadata, "without metadata", id="chunk-without-metadata"),
        pytest.param(_miscount_rows, "disagree", id="row-count-disagrees-with-row-groups"),
    ],
)
def test_a_part_with_a_footer_the_stitcher_cannot_move_is_refused(edit: Callable[[Struct], None], message: str) -> None:
    # Given a stitcher that joined one part, and a part whose footer says something it cannot join
    first, second = _pieces(_sorties(400), [200, 200])
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)
    stitcher.append(ParquetPart(_encode(first)))
    written = sink.getvalue()
    bad = ParquetPart(_edit_footer(_encode(second).to_pybytes(), edit))

    # When it is appended
    with pytest.raises(StitchError, match=message):
        stitcher.append(bad)

    # Then nothing was written for it
    assert sink.getvalue() == written
    assert (stitcher.bytes_written, stitcher.rows) == (len(written), 200)


def test_a_part_with_an_encrypted_footer_is_refused() -> None:
    # Given a file whose footer names an encryption algorithm (FileMetaData.encryption_algorithm = AES_GCM_V1)
    aes_gcm_v1 = Struct([(1, STRUCT, Struct([]))])
    file = _edit_footer(_encode(_sorties(10)).to_pybytes(), lambda f: f.set(FMD_ENCRYPTION, STRUCT, aes_gcm_v1))

    # When it is parsed as a part
    # Then it is refused
    with pytest.raises(StitchError, match="encrypted footer"):
        ParquetPart(file)


def test_finish_without_parts_raises() -> None:
    # Given a stitcher that was given nothing
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)

    # When it is finished
    with pytest.raises(StitchError, match="no parts"):
        stitcher.finish()

    # Then nothing was written
    assert sink.getvalue() == b""


# --- refusals leave no trace, parts stay reusable, garbage is a typed error --------------------------------------


def test_a_refused_first_part_leaves_nothing_behind() -> None:
    # Given a fresh stitcher whose first part is refused (it has a page index)
    sink = io.BytesIO()
    stitcher = ParquetStitcher(sink.write)
    with pytest.raises(StitchError, match="page index"):
        stitcher.append(ParquetPart(_encode(_sorties(100), write_page_index=True)))

    # When the stitcher is finished with no part joined
    # Then it is as if nothing had been appended: nothing written, and finish refuses to write an empty join
    assert (sink.getvalue(), stitcher.bytes_written) == (b"", 0)
    with pytest.raises(StitchError, match="no parts"):
        stitcher.finish()


def test_a_part_joined_once_can_be_joined_again_into_another_file() -> None:
    # Given two parts already stitched into one file (the second one moved by the first one's body)
    table = _sorties(400)
    first, second = _pieces(table, [200, 200])
    p1, p2 = ParquetPart(_encode(first)), ParquetPart(_encode(second))
    joined, _ = _stitch_parts([p1, p2])
    assert _read(joined).equals(table)

    # When the second part is stitched again, alone, into another file (a retry of the output, say)
    again, _ = _stitch_parts([p2])

    # Then that file holds the second part's rows
    assert _read(again).equals(second)


def test_a_footer_of_the_wrong_shape_raises_stitch_error() -> None:
    # Given a file whose footer decodes as Thrift but has an i32 where the row-group list belongs
    footer = encode_struct(Struct([(1, I32, 2), (3, I64, 5), (4, I32, 7)]))
    file = MAGIC + footer + len(footer).to_bytes(4, "little") + MAGIC

    # When it is joined
    # Then it is refused as a part that cannot be joined
    with pytest.raises(StitchError):
        ParquetStitcher(io.BytesIO().write).append(ParquetPart(file))
