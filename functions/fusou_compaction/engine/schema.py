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

A few schemas are refused outright (``unsupported_column``): names that are not UTF-8, and
nesting deeper than pyarrow reads by default. The engine raises UnsupportedInputError for them.
"""

from __future__ import annotations

import base64
import ctypes
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
    try:
        names = schema.names
    except UnicodeDecodeError:
        return True  # names that are not text cannot be matched either (see unsupported_column)
    return len(set(names)) != len(names)


# pyarrow's Parquet reader refuses a schema deeper than this many nodes (the root and the leaf
# counted; a list or a map takes two: its group and the repeated group inside), unless told more.
PYARROW_SCHEMA_DEPTH = 100
# What the engine reads footers with: enough to see, and name, a column past that limit, and still
# a bound on the reader's recursion through a hostile footer.
READ_SCHEMA_DEPTH = 256


class _ArrowSchemaC(ctypes.Structure):
    pass


_ArrowSchemaC._fields_ = [  # the Arrow C data interface's ArrowSchema
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_void_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.c_void_p),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.CFUNCTYPE(None, ctypes.POINTER(_ArrowSchemaC))),
    ("private_data", ctypes.c_void_p),
]


def _field_name(f: pa.Field[Any]) -> tuple[str, bool]:
    """A field's name as text, and whether it is UTF-8; other bytes come out as \\xNN escapes
    (pyarrow's ``Field.name`` raises on them, so the bytes are taken through the C interface)."""
    try:
        return f.name, True
    except UnicodeDecodeError:
        c = _ArrowSchemaC()
        f._export_to_c(ctypes.addressof(c))  # type: ignore[attr-defined]
        try:
            return (c.name or b"").decode("utf-8", "backslashreplace"), False
        finally:
            c.release(ctypes.byref(c))


def _children(t: pa.DataType) -> list[pa.Field[Any]]:
    if pat.is_dictionary(t):
        t = t.value_type
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    return [t.field(i) for i in range(t.num_fields)]


def _not_utf8(f: pa.Field[Any], parent: str) -> str | None:
    """The path of the first name under (and including) ``f`` that is not UTF-8, if any."""
    name, ok = _field_name(f)
    path = f"{parent}.{name}" if parent else name
    if not ok:
        return path
    return next((bad for child in _children(f.type) if (bad := _not_utf8(child, path)) is not None), None)


def _parquet_depth(t: pa.DataType) -> int:
    """Parquet schema nodes from a column's own node down to its deepest leaf, as written."""
    children = _children(t)
    if not children:
        return 1
    below = max(_parquet_depth(c.type) for c in children)
    # A list is a LIST group around a repeated group (a map's repeated group is its entries struct).
    lists = pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t)
    return below + (2 if lists or pat.is_list_view(t) or pat.is_large_list_view(t) else 1)


def unsupported_column(schema: pa.Schema) -> tuple[str, str] | None:
    """The first column no output should carry, as (column, why), or None.

    - a name, at any depth, that is not UTF-8: Parquet, Arrow, DuckDB and polars all take names
      as text (pyarrow and DuckDB raise on such a name, polars calls the file out of
      specification), and unification matches columns by name;
    - nesting deeper than pyarrow reads by default: the output would be unreadable to every
      pyarrow reader of the lake that keeps the default limit (DuckDB and polars read it).
    """
    for i in range(len(schema)):
        f = schema.field(i)
        bad = _not_utf8(f, "")
        if bad is not None:
            return bad, "has a name that is not UTF-8"
        depth = 1 + _parquet_depth(f.type)  # the root counts
        if depth > PYARROW_SCHEMA_DEPTH:
            return f.name, f"is nested {depth} Parquet levels deep; pyarrow reads at most {PYARROW_SCHEMA_DEPTH}"
    return None


def name_problem(schema: pa.Schema) -> tuple[str, str] | None:
    """The first column name (at any depth) that cannot name a column unambiguously, as
    (column path, why): not UTF-8, empty, or the same as a sibling's. Uploads refuse these; the
    engine compacts the last two (a schema with duplicate names is a group of its own)."""

    def walk(fields: list[pa.Field[Any]], parent: str) -> tuple[str, str] | None:
        seen: set[str] = set()
        for f in fields:
            name, ok = _field_name(f)
            path = f"{parent}.{name}" if parent else name
            if not ok:
                return path, "has a name that is not UTF-8"
            if name == "":
                return path or "(empty)", "has an empty name"
            if name in seen:
                return path, "is named twice"
            seen.add(name)
            bad = inside(f.type, path)
            if bad is not None:
                return bad
        return None

    def inside(t: pa.DataType, path: str) -> tuple[str, str] | None:
        if pat.is_dictionary(t):
            t = t.value_type
        if pat.is_struct(t):
            return walk(_children(t), path)
        # List items and map entries are named by the format, not the writer: only what they hold.
        return next((bad for child in _children(t) if (bad := inside(child.type, path)) is not None), None)

    return walk([schema.field(i) for i in range(len(schema))], "")


def deepest_column(schema: pa.Schema) -> tuple[str, int] | None:
    """The top-level column nested deepest and its depth in Parquet schema levels, counted as
    pyarrow's reader limit counts them (``PYARROW_SCHEMA_DEPTH``: the root and the leaf count)."""
    depths = [(_field_name(schema.field(i))[0], 1 + _parquet_depth(schema.field(i).type)) for i in range(len(schema))]
    return max(depths, key=lambda d: d[1], default=None)


def first_unsupported(schemas: Sequence[pa.Schema]) -> tuple[int, str, str] | None:
    """(position, column, why) of the first schema with an ``unsupported_column``, or None.

    Callers pass the same few Schema objects thousands of times: each is looked at once.
    """
    seen: set[int] = set()
    for index, schema in enumerate(schemas):
        if id(schema) in seen:
            continue
        seen.add(id(schema))
        problem = unsupported_column(schema)
        if problem is not None:
            return index, *problem
    return None


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
    try:
        a, b = normalize_schema(a), normalize_schema(b)
    except UnicodeDecodeError:
        return None  # a name that is not text matches nothing (see unsupported_column)
    fields = _merge_field_lists(list(a), list(b))
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
