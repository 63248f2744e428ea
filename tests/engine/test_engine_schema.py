"""Schema unification rules and the schema fingerprint."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fusou_compaction.engine import merge_types, schema_fingerprint, unify_schemas


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (pa.int16(), pa.int32(), pa.int32()),
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.uint16(), pa.int16(), pa.int32()),
        (pa.uint32(), pa.int64(), pa.int64()),
        (pa.float32(), pa.float64(), pa.float64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.timestamp("ms"), pa.timestamp("us"), pa.timestamp("us")),
        (pa.timestamp("ms", "Asia/Tokyo"), pa.timestamp("ms", "UTC"), pa.timestamp("ms", "UTC")),
        (pa.timestamp("ms"), pa.timestamp("ms", "UTC"), pa.timestamp("ms", "UTC")),
        (pa.list_(pa.int16()), pa.list_(pa.int64()), pa.list_(pa.int64())),
        (
            pa.struct([("a", pa.int16())]),
            pa.struct([("b", pa.string()), ("a", pa.int32())]),
            pa.struct([("a", pa.int32()), ("b", pa.string())]),
        ),
    ],
)
def test_compatible_types_merge_to_the_lossless_common_type(
    a: pa.DataType, b: pa.DataType, expected: pa.DataType
) -> None:
    # Given two compatible types, When merged either way round, Then the lossless common type
    assert merge_types(a, b) == expected
    reverse = merge_types(b, a)
    assert reverse is not None
    # struct fields keep order of first appearance, so only the set is symmetric
    assert (
        sorted(map(str, reverse)) == sorted(map(str, expected))
        if pa.types.is_struct(expected)
        else (reverse == expected)
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (pa.string(), pa.int64()),
        (pa.bool_(), pa.int8()),
        (pa.int64(), pa.float64()),
        (pa.uint64(), pa.int64()),
        (pa.string(), pa.binary()),
        (pa.list_(pa.string()), pa.list_(pa.int32())),
        (pa.struct([("a", pa.string())]), pa.struct([("a", pa.int32())])),
    ],
)
def test_conflicting_types_do_not_merge(a: pa.DataType, b: pa.DataType) -> None:
    # Given types no lossless cast joins, When merged, Then a conflict
    assert merge_types(a, b) is None


def test_groups_are_first_fit_in_order() -> None:
    # Given int, string, widened int, nullable extra column schemas
    schemas = [
        pa.schema([("k", pa.int16())]),
        pa.schema([("k", pa.string())]),
        pa.schema([("k", pa.int64()), ("x", pa.float64())]),
        pa.schema([("k", pa.dictionary(pa.int32(), pa.string()))]),
    ]

    # When unified
    groups = unify_schemas(schemas)

    # Then the ints join the first group with a nullable extra column, the strings the second
    assert [g.members for g in groups] == [[0, 2], [1, 3]]
    assert groups[0].schema == pa.schema([("k", pa.int64()), pa.field("x", pa.float64(), True)])
    assert groups[1].schema == pa.schema([("k", pa.string())])


def test_a_missing_non_nullable_column_becomes_nullable() -> None:
    # Given a required column that older clients did not write
    schemas = [pa.schema([pa.field("a", pa.int32(), False)]), pa.schema([pa.field("b", pa.int32(), False)])]

    # When unified, Then both columns are nullable in the one group
    (group,) = unify_schemas(schemas)
    assert [(f.name, f.nullable) for f in group.schema] == [("a", True), ("b", True)]


def test_fingerprint_is_stable_and_ignores_encodings_and_metadata() -> None:
    # Given the same logical schema as plain, dictionary/large and with metadata
    plain = pa.schema([("map_id", pa.string()), ("ids", pa.list_(pa.field("element", pa.int32())))])
    encoded = pa.schema(
        [("map_id", pa.dictionary(pa.int8(), pa.large_string())), ("ids", pa.large_list(pa.int32()))],
        metadata={b"pandas": b"{}"},
    )

    # When fingerprinted, Then equal, and equal to the recorded value (uploads store it: it must
    # not change between releases)
    assert schema_fingerprint(plain) == schema_fingerprint(encoded)
    assert schema_fingerprint(plain) == "0b01ae7cd34d098076afbfa253376cee68cd8c4a728adb6cc6c0b8078632ab55"


def test_fingerprint_tells_types_order_and_nullability_apart() -> None:
    base = pa.schema([("a", pa.int32()), ("b", pa.string())])
    variants = [
        pa.schema([("a", pa.int64()), ("b", pa.string())]),
        pa.schema([("b", pa.string()), ("a", pa.int32())]),
        pa.schema([pa.field("a", pa.int32(), False), ("b", pa.string())]),
        pa.schema([("a", pa.timestamp("ms")), ("b", pa.string())]),
    ]
    assert len({schema_fingerprint(s) for s in [base, *variants]}) == 5
