"""Schema unification: which fragments can share one output schema, and what that schema is.

Rules (all lossless, so a row never changes meaning):
- a column missing from some inputs becomes nullable and is filled with nulls;
- integers widen (int16 -> int32 -> int64; an unsigned type joins a signed one only if a wider
  signed type holds every value); floats widen;
- a null-typed column takes the other side's type;
- dictionary, large and view encodings fold to the plain type (they are encodings, not types);
- timestamps take the finest unit; differing zones become UTC (Arrow stores instants in UTC, so
  values do not move); a zone-less timestamp joined with a zoned one is read as UTC;
- lists, fixed-size lists, maps and structs unify element by element, struct fields by name.
Anything else (string vs int, bool vs int, int vs float...) is a conflict: the input goes to
another group, and so to another output file, never dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.types as pat

_INT_BITS = {
    pa.int8(): 8,
    pa.int16(): 16,
    pa.int32(): 32,
    pa.int64(): 64,
    pa.uint8(): 8,
    pa.uint16(): 16,
    pa.uint32(): 32,
    pa.uint64(): 64,
}
_SIGNED = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}
_UNSIGNED = {8: pa.uint8(), 16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}
_FLOAT_BITS = {pa.float16(): 16, pa.float32(): 32, pa.float64(): 64}
_UNITS = ["s", "ms", "us", "ns"]
_ITEM = "item"


def normalize_type(t: pa.DataType) -> pa.DataType:  # noqa: PLR0911  (one return per type family)
    """The plain logical form of a type: encodings folded, list item names made uniform."""
    if pat.is_dictionary(t):
        return normalize_type(t.value_type)
    if pat.is_large_string(t) or pat.is_string_view(t):
        return pa.string()
    if pat.is_large_binary(t) or pat.is_binary_view(t):
        return pa.binary()
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_list_view(t) or pat.is_large_list_view(t):
        vf = t.value_field
        return pa.list_(pa.field(_ITEM, normalize_type(vf.type), vf.nullable))
    if pat.is_fixed_size_list(t):
        vf = t.value_field
        return pa.list_(pa.field(_ITEM, normalize_type(vf.type), vf.nullable), t.list_size)  # type: ignore[no-any-return]
    if pat.is_map(t):
        return pa.map_(  # type: ignore[no-any-return, call-overload]
            pa.field("key", normalize_type(t.key_type), False),
            pa.field("value", normalize_type(t.item_type), t.item_field.nullable),
        )
    if pat.is_struct(t):
        return pa.struct([_normalize_field(t.field(i)) for i in range(t.num_fields)])
    return t


def _normalize_field(f: pa.Field[Any]) -> pa.Field[Any]:
    return pa.field(f.name, normalize_type(f.type), f.nullable)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([_normalize_field(f) for f in schema])


def _canonical(t: pa.DataType) -> Any:  # noqa: PLR0911
    # An explicit tree rather than str(t): pyarrow's type spelling is not a stable contract.
    if pat.is_struct(t):
        return ["struct", [[f.name, f.nullable, _canonical(f.type)] for f in t]]
    if pat.is_fixed_size_list(t):
        return ["fixed_size_list", t.list_size, t.value_field.nullable, _canonical(t.value_type)]
    if pat.is_list(t):
        return ["list", t.value_field.nullable, _canonical(t.value_type)]
    if pat.is_map(t):
        return ["map", _canonical(t.key_type), t.item_field.nullable, _canonical(t.item_type)]
    if pat.is_timestamp(t):
        return ["timestamp", t.unit, t.tz]
    if pat.is_decimal(t):
        return ["decimal", t.bit_width, t.precision, t.scale]
    return [str(t)]


def has_duplicate_names(schema: pa.Schema) -> bool:
    """Columns cannot be matched by name: such a schema is a group of its own (unify_schemas)."""
    return len(set(schema.names)) != len(schema.names)


def schema_to_base64(schema: pa.Schema) -> str:
    """The schema as Arrow IPC bytes in base64: how the catalog stores it (migration 0004)."""
    # Schema-level metadata (pandas' or a writer's) is not part of the fingerprint: left out.
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode("ascii")


def schema_from_base64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text, validate=True)))


def schema_fingerprint(schema: pa.Schema) -> str:
    """Stable hex digest of the canonical (normalized) schema: names, order, types, nullability.

    Metadata is ignored and dictionary/large/view encodings fold to the plain type, so two
    fragments with equal fingerprints always land in the same group.
    """
    canon = [[f.name, f.nullable, _canonical(f.type)] for f in normalize_schema(schema)]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def _merge_int(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    ab, bb = _INT_BITS[a], _INT_BITS[b]  # type: ignore[index]
    a_signed, b_signed = pat.is_signed_integer(a), pat.is_signed_integer(b)
    if a_signed == b_signed:
        return a if ab >= bb else b
    unsigned_bits, signed_bits = (bb, ab) if a_signed else (ab, bb)
    bits = max(signed_bits, unsigned_bits * 2)
    return _SIGNED.get(bits)  # uint64 has no signed home: conflict


def merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:  # noqa: PLR0911
    """The narrowest type both normalized types cast to losslessly, or None on a conflict."""
    if a == b:
        return a
    if pat.is_null(a):
        return b
    if pat.is_null(b):
        return a
    if pat.is_integer(a) and pat.is_integer(b):
        return _merge_int(a, b)
    if pat.is_floating(a) and pat.is_floating(b):
        return a if _FLOAT_BITS[a] >= _FLOAT_BITS[b] else b
    if pat.is_timestamp(a) and pat.is_timestamp(b):
        unit = max(a.unit, b.unit, key=_UNITS.index)
        tz = a.tz if a.tz == b.tz else "UTC"
        return pa.timestamp(unit, tz=tz)
    if pat.is_fixed_size_list(a) and pat.is_fixed_size_list(b):
        if a.list_size != b.list_size:
            return None
        item = _merge_fields(a.value_field, b.value_field)
        return None if item is None else pa.list_(item, a.list_size)
    if pat.is_list(a) and pat.is_list(b):
        item = _merge_fields(a.value_field, b.value_field)
        return None if item is None else pa.list_(item)
    if pat.is_map(a) and pat.is_map(b):
        key = merge_types(a.key_type, b.key_type)
        item = _merge_fields(a.item_field, b.item_field)
        if key is None or item is None:
            return None
        return pa.map_(pa.field("key", key, False), pa.field("value", item.type, item.nullable))  # type: ignore[no-any-return, call-overload]
    if pat.is_struct(a) and pat.is_struct(b):
        fields = _merge_field_lists(list(a), list(b))
        return None if fields is None else pa.struct(fields)
    return None


def _merge_fields(a: pa.Field[Any], b: pa.Field[Any]) -> pa.Field[Any] | None:
    t = merge_types(a.type, b.type)
    return None if t is None else pa.field(a.name, t, a.nullable or b.nullable)


def _merge_field_lists(a: list[pa.Field[Any]], b: list[pa.Field[Any]]) -> list[pa.Field[Any]] | None:
    # Union by name, in order of first appearance; a field absent on one side must be nullable.
    b_by_name = {f.name: f for f in b}
    out: list[pa.Field[Any]] = []
    for fa in a:
        fb = b_by_name.get(fa.name)
        if fb is None:
            out.append(fa.with_nullable(True))
            continue
        merged = _merge_fields(fa, fb)
        if merged is None:
            return None
        out.append(merged)
    a_names = {f.name for f in a}
    out.extend(fb.with_nullable(True) for fb in b if fb.name not in a_names)
    return out


def merge_schemas(a: pa.Schema, b: pa.Schema) -> pa.Schema | None:
    """Unify two schemas (normalized first), or None if any column conflicts."""
    fields = _merge_field_lists(list(normalize_schema(a)), list(normalize_schema(b)))
    return None if fields is None else pa.schema(fields)


@dataclass
class SchemaGroup:
    """Inputs (by position in the list given to unify_schemas) that share one output schema."""

    schema: pa.Schema
    members: list[int] = field(default_factory=list)


def unify_schemas(schemas: Sequence[pa.Schema]) -> list[SchemaGroup]:
    """Split schemas, in order, into groups that unify; first fit keeps the result deterministic.

    Most tables give one group. A schema that conflicts with every earlier group opens a new one.
    Duplicate names inside one schema cannot be unified by name, so such a schema gets a group of
    its own (still written, never dropped).
    """
    groups: list[SchemaGroup] = []
    merged_fp: list[set[str]] = []  # fingerprints already absorbed by each group: skip re-merging
    # Callers usually pass the same few Schema objects thousands of times (one per fragment).
    fingerprints: dict[int, str] = {}
    for index, schema in enumerate(schemas):
        if has_duplicate_names(schema):
            groups.append(SchemaGroup(normalize_schema(schema), [index]))
            merged_fp.append({"\0unmergeable"})
            continue
        fp = fingerprints.get(id(schema))
        if fp is None:
            fp = fingerprints[id(schema)] = schema_fingerprint(schema)
        for g, group in enumerate(groups):
            if fp in merged_fp[g]:
                group.members.append(index)
                break
            if "\0unmergeable" in merged_fp[g]:
                continue
            merged = merge_schemas(group.schema, schema)
            if merged is not None:
                group.schema = merged
                group.members.append(index)
                merged_fp[g].add(fp)
                break
        else:
            groups.append(SchemaGroup(normalize_schema(schema), [index]))
            merged_fp.append({fp})
    return groups


def unify_known(fingerprints: Sequence[str], known: Mapping[str, pa.Schema]) -> pa.Schema | None:
    """The unified schema of inputs with these fingerprints (upload order; leave empty inputs
    out, as phase 1 does) if every one is known and they form one group, else None.

    Unifying each distinct schema once, in order of first appearance, gives what unifying every
    input's footer gives: a schema already absorbed is skipped there too.
    """
    order = list(dict.fromkeys(fingerprints))
    if not order or any(fp not in known for fp in order):
        return None
    groups = unify_schemas([known[fp] for fp in order])
    return groups[0].schema if len(groups) == 1 else None


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a table to a unified schema it belongs to: one cast per column, nulls for missing ones.

    Arrow's cast does the per-value work (widening, dictionary decode, struct fields by name).
    """
    if table.schema.equals(schema, check_metadata=False):
        return table
    if has_duplicate_names(schema):
        return table.cast(schema)  # a group of its own (see unify_schemas): same layout, by position
    names = table.schema.names
    columns: list[pa.ChunkedArray[Any] | pa.Array[Any]] = []
    for f in schema:
        if f.name in names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)
