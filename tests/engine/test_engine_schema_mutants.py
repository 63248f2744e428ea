"""engine/schema.py, called directly where make mutate MODULE=schema found no test of its own:
name_problem and deepest_column (used by the upload checks), unify_known (used by the pipeline's
steps), and the stored schema's base64 check."""

from __future__ import annotations

import binascii

import pyarrow as pa
import pytest
from tests.odd_parquet import rename_in_footer

from fusou_compaction.engine.read import open_parquet
from fusou_compaction.engine.schema import (
    deepest_column,
    name_problem,
    normalize_type,
    schema_fingerprint,
    schema_from_base64,
    schema_to_base64,
    unify_known,
)


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in fields])


def test_names_that_name_columns_unambiguously_have_no_problem() -> None:
    inner = pa.struct([pa.field("a", pa.int64()), pa.field("b", pa.string())])
    schema = _schema(
        ("s", inner),
        ("l", pa.list_(inner)),
        ("m", pa.map_(pa.string(), inner)),
        ("d", pa.dictionary(pa.int32(), pa.string())),
        ("a", pa.int64()),  # the same name as a nested one: not a sibling
    )
    assert name_problem(schema) is None


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (_schema(("", pa.int64())), ("(empty)", "has an empty name")),
        (_schema(("x", pa.int64()), ("x", pa.string())), ("x", "is named twice")),
        (_schema(("ok", pa.int64()), ("s", pa.struct([pa.field("", pa.int64())]))), ("s.", "has an empty name")),
        (
            _schema(("s", pa.struct([pa.field("y", pa.int64()), pa.field("y", pa.int8())]))),
            ("s.y", "is named twice"),
        ),
        (
            _schema(("l", pa.list_(pa.struct([pa.field("y", pa.int64()), pa.field("y", pa.int8())])))),
            ("l.y", "is named twice"),
        ),
        (
            _schema(("m", pa.map_(pa.string(), pa.struct([pa.field("z", pa.int64()), pa.field("z", pa.int8())])))),
            ("m.value.z", "is named twice"),
        ),
    ],
)
def test_the_first_ambiguous_name_is_named_with_its_path(schema: pa.Schema, problem: tuple[str, str]) -> None:
    assert name_problem(schema) == problem


def test_the_first_problem_is_reported_not_a_later_one() -> None:
    schema = _schema(("x", pa.int64()), ("x", pa.int64()), ("", pa.int64()))
    assert name_problem(schema) == ("x", "is named twice")


def test_the_deepest_column_is_counted_in_parquet_levels() -> None:
    assert deepest_column(pa.schema([])) is None
    # the root and the leaf count; a list takes two levels, a struct or a map's entries one
    assert deepest_column(_schema(("a", pa.int64()))) == ("a", 2)
    assert deepest_column(_schema(("a", pa.int64()), ("s", pa.struct([pa.field("c", pa.int64())])))) == ("s", 3)
    assert deepest_column(_schema(("s", pa.struct([pa.field("c", pa.int64())])), ("l", pa.list_(pa.int64())))) == (
        "l",
        4,
    )
    assert deepest_column(_schema(("ll", pa.list_(pa.list_(pa.int64()))))) == ("ll", 6)
    assert deepest_column(_schema(("m", pa.map_(pa.string(), pa.int64())))) == ("m", 4)
    # the first of equally deep columns
    assert deepest_column(_schema(("a", pa.int64()), ("b", pa.int64()))) == ("a", 2)


A = _schema(("x", pa.int32()))
B = _schema(("x", pa.int64()), ("y", pa.string()))
C = _schema(("x", pa.string()))


def test_known_schemas_unify_in_order_of_first_appearance() -> None:
    known = {"a": A, "b": B, "c": C}
    assert unify_known(["a", "b", "a"], known) == _schema(("x", pa.int64()), ("y", pa.string()))
    assert unify_known(["b", "a"], known) == _schema(("x", pa.int64()), ("y", pa.string()))
    assert unify_known(["a"], known) == A


def test_unknown_or_ununifiable_schemas_give_none() -> None:
    known = {"a": A, "b": B, "c": C}
    assert unify_known([], known) is None
    assert unify_known(["a", "zz"], known) is None
    assert unify_known(["a", "c"], known) is None


def test_a_stored_schema_with_characters_outside_base64_is_refused_not_skipped() -> None:
    text = schema_to_base64(B)
    assert schema_from_base64(text) == B
    # base64 without validation drops such characters and decodes what is left
    with pytest.raises(binascii.Error):
        schema_from_base64(text[:8] + "!" + text[8:])


def test_a_name_that_is_not_utf8_is_named_with_its_bytes_escaped() -> None:
    # Given a Parquet file whose column "cafe" is renamed in the footer to b"caf\xe9" (Latin-1)
    data = rename_in_footer(pa.table({"cafe": [1, 2]}), "cafe", b"caf\xe9")
    schema = open_parquet(pa.BufferReader(data)).schema_arrow  # ParquetFile cannot: it maps names
    # Then name_problem says so, with the bytes it could not read escaped
    assert name_problem(schema) == ("caf\\xe9", "has a name that is not UTF-8")


def test_the_fingerprint_of_every_type_family_is_pinned() -> None:
    # Given a schema with each family _canonical spells out (struct, fixed-size list, list, map,
    # timestamp, decimal) and a plain type
    schema = pa.schema(
        [
            pa.field("s", pa.struct([pa.field("a", pa.int32(), False)])),
            pa.field("f", pa.list_(pa.field("x", pa.int8(), False), 3)),
            pa.field("l", pa.list_(pa.string())),
            pa.field("m", pa.map_(pa.string(), pa.int64())),
            pa.field("t", pa.timestamp("ms", "UTC")),
            pa.field("d", pa.decimal128(10, 2)),
            pa.field("i", pa.int16(), False),
        ]
    )
    # Then its fingerprint is the one the catalog stores (arrow_schemas): a changed canonical form
    # would leave every stored fingerprint unmatched (kills each family's tag changed)
    assert schema_fingerprint(schema) == "0aa0b4f4ede2bfae5592800024e076085a647344683a9d6169aa26577a3243f7"


def test_normalized_maps_and_fixed_size_lists_keep_their_names_and_nullability() -> None:
    # Given a map whose fields are named k and v, neither nullable, and a fixed-size list of
    # non-nullable items
    m = normalize_type(pa.map_(pa.field("k", pa.string(), False), pa.field("v", pa.int64(), False)))
    f = normalize_type(pa.list_(pa.field("x", pa.int8(), False), 3))
    # Then the map's fields are named as Parquet's spec names them, and the value keeps nullable=False
    assert (m.key_field.name, m.item_field.name, m.item_field.nullable) == ("key", "value", False)
    # And the list's item is "item", still not nullable, of the same size
    assert (f.value_field.name, f.value_field.nullable, f.list_size) == ("item", False, 3)
