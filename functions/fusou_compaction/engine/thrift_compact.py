"""Thrift's compact protocol without a schema: just enough to rewrite Parquet footers losslessly.

Why not a Thrift library: thriftpy2 and Apache Thrift decode into classes generated from an IDL,
and drop every field the IDL does not know. A footer written by a newer pyarrow (size statistics,
geospatial statistics, ...) must pass through byte for byte, so this codec keeps every field as it
came, in wire order, and the stitcher only touches the offset fields it knows by number.

Wire format (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md):
field headers are ``delta << 4 | type`` (or ``type`` followed by a zigzag varint id), integers are
zigzag varints, binary is a varint length then bytes, lists carry ``size << 4 | element type``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

# Compact type ids. Booleans as struct fields carry their value in the type (TRUE / FALSE).
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT, UUID = range(14)


class ThriftError(ValueError):
    """The bytes are not a well-formed compact-protocol struct."""


@dataclass(slots=True)
class Struct:
    """Fields as ``(id, compact type, value)`` in wire order."""

    fields: list[tuple[int, int, Any]] = field(default_factory=list)

    def get(self, fid: int) -> Any:
        for f, _, v in self.fields:
            if f == fid:
                return v
        return None

    def has(self, fid: int) -> bool:
        return any(f == fid for f, _, _ in self.fields)

    def set(self, fid: int, ttype: int, value: Any) -> None:
        """Replace field ``fid``, or insert it keeping ids ascending (as Thrift writers do)."""
        for i, (f, _, _) in enumerate(self.fields):
            if f == fid:
                self.fields[i] = (fid, ttype, value)
                return
            if f > fid:
                self.fields.insert(i, (fid, ttype, value))
                return
        self.fields.append((fid, ttype, value))


@dataclass(slots=True)
class Raw:
    """A container field kept as its encoded bytes (see ``decode_struct``'s ``plan``)."""

    data: bytes


# Which container fields to decode, by field id, nested: {4: {1: {}}} decodes field 4 and, in
# each struct it holds, field 1; every other container stays Raw. None decodes everything.
Plan: TypeAlias = "dict[int, Plan] | None"
_CONTAINERS = frozenset((LIST, SET, MAP, STRUCT))


@dataclass(slots=True)
class List:
    etype: int
    items: list[Any]


@dataclass(slots=True)
class Map:
    ktype: int
    vtype: int
    items: list[tuple[Any, Any]]


_MAX_DEPTH = 64  # Parquet footers nest ~6 deep; deeper input is garbage, not a stack overflow


class _Reader:
    __slots__ = ("buf", "depth", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.depth = 0

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ThriftError(f"nested deeper than {_MAX_DEPTH} levels")

    def byte(self) -> int:
        try:
            b = self.buf[self.pos]
        except IndexError:
            raise ThriftError("truncated struct") from None
        self.pos += 1
        return b

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ThriftError("truncated value")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, ttype: int) -> None:
        """Move past one value without building it."""
        if ttype in _CONTAINERS:
            self.enter()
            self._skip(ttype)
            self.depth -= 1
        else:
            self._skip(ttype)

    def value(self, ttype: int, plan: Plan = None) -> Any:
        if ttype in _CONTAINERS:
            self.enter()
            out = self._value(ttype, plan)
            self.depth -= 1
            return out
        return self._value(ttype, plan)

    def _skip(self, ttype: int) -> None:  # noqa: PLR0912  (one branch per wire type)
        if ttype in (I16, I32, I64):
            self.varint()
        elif ttype == BINARY:
            self.raw(self.varint())
        elif ttype == STRUCT:
            while True:
                header = self.byte()
                if header == STOP:
                    return
                if not header >> 4:
                    self.zigzag()
                if header & 0x0F not in (TRUE, FALSE):
                    self.skip(header & 0x0F)
        elif ttype in (LIST, SET):
            header = self.byte()
            size, etype = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            for _ in range(size):
                self.skip(BYTE if etype in (TRUE, FALSE) else etype)
        elif ttype == MAP:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        elif ttype in (BYTE, TRUE, FALSE):
            self.byte()
        elif ttype in (DOUBLE, UUID):
            self.raw(8 if ttype == DOUBLE else 16)
        else:
            raise ThriftError(f"unknown compact type {ttype}")

    def _value(self, ttype: int, plan: Plan) -> Any:  # noqa: PLR0911
        if ttype in (I16, I32, I64):
            return self.zigzag()
        if ttype == BINARY:
            return self.raw(self.varint())
        if ttype == STRUCT:
            return self.struct(plan)
        if ttype in (LIST, SET):
            header = self.byte()
            size, etype = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            if etype in (TRUE, FALSE):  # booleans in collections: one byte each, kept as sent
                return List(etype, [self.byte() for _ in range(size)])
            return List(etype, [self.value(etype, plan) for _ in range(size)])
        if ttype == MAP:
            size = self.varint()
            if size == 0:
                return Map(0, 0, [])
            kv = self.byte()
            ktype, vtype = kv >> 4, kv & 0x0F
            return Map(ktype, vtype, [(self.value(ktype), self.value(vtype)) for _ in range(size)])
        if ttype == BYTE:
            return self.byte()
        if ttype == DOUBLE:
            return self.raw(8)
        if ttype == UUID:
            return self.raw(16)
        if ttype in (TRUE, FALSE):  # a boolean inside a map
            return self.byte()
        raise ThriftError(f"unknown compact type {ttype}")

    def struct(self, plan: Plan = None) -> Struct:
        fields: list[tuple[int, int, Any]] = []
        last = 0
        while True:
            header = self.byte()
            if header == STOP:
                return Struct(fields)
            ttype = header & 0x0F
            delta = header >> 4
            fid = last + delta if delta else self.zigzag()
            if ttype in (TRUE, FALSE):
                fields.append((fid, ttype, ttype == TRUE))
            elif plan is not None and ttype in _CONTAINERS and fid not in plan:
                start = self.pos
                self.skip(ttype)
                fields.append((fid, ttype, Raw(self.buf[start : self.pos])))
            else:
                fields.append((fid, ttype, self.value(ttype, None if plan is None else plan.get(fid, {}))))
            last = fid


def decode_struct(buf: bytes | memoryview, plan: Plan = None) -> Struct:
    """Decode one struct; the whole buffer must be consumed.

    With a ``plan``, only the container fields it names are decoded (recursively, with the plan
    under that id); the others are kept as ``Raw`` bytes, written back verbatim and compared as
    bytes. Scalars are always decoded.
    """
    reader = _Reader(bytes(buf))
    out = reader.struct(plan)
    if reader.pos != len(reader.buf):
        raise ThriftError(f"{len(reader.buf) - reader.pos} bytes after the struct")
    return out


def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) if n >= 0 else ((-n) << 1) - 1)


def _value(out: bytearray, ttype: int, value: Any) -> None:  # noqa: PLR0912
    if type(value) is Raw:
        out += value.data
    elif ttype in (I16, I32, I64):
        _zigzag(out, value)
    elif ttype == BINARY:
        _varint(out, len(value))
        out += value
    elif ttype == STRUCT:
        _struct(out, value)
    elif ttype in (LIST, SET):
        size = len(value.items)
        if size < 15:
            out.append(size << 4 | value.etype)
        else:
            out.append(0xF0 | value.etype)
            _varint(out, size)
        if value.etype in (TRUE, FALSE):
            out += bytes(value.items)
        else:
            for item in value.items:
                _value(out, value.etype, item)
    elif ttype == MAP:
        _varint(out, len(value.items))
        if value.items:
            out.append(value.ktype << 4 | value.vtype)
            for k, v in value.items:
                _value(out, value.ktype, k)
                _value(out, value.vtype, v)
    elif ttype in (BYTE, TRUE, FALSE):
        out.append(value)
    elif ttype in (DOUBLE, UUID):
        out += value
    else:
        raise ThriftError(f"unknown compact type {ttype}")


def _struct(out: bytearray, struct: Struct) -> None:
    last = 0
    for fid, wire_type, value in struct.fields:
        ttype = (TRUE if value else FALSE) if wire_type in (TRUE, FALSE) else wire_type
        delta = fid - last
        if 0 < delta <= 15:
            out.append(delta << 4 | ttype)
        else:
            out.append(ttype)
            _zigzag(out, fid)
        if ttype not in (TRUE, FALSE):
            _value(out, ttype, value)
        last = fid
    out.append(STOP)


def encode_struct(struct: Struct) -> bytes:
    out = bytearray()
    _struct(out, struct)
    return bytes(out)
