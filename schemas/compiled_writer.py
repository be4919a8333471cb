"""Avro binary writers compiled from a schema, for the shapes lead events are made of.

fastavro's writer picks a union branch by validating the value against each branch
in turn; a lead event has twenty nullable fields and a snapshot map whose every value
is a five-way union, so that validation is most of the cost of encoding one. A
compiled writer knows each field's type when it is built and picks the branch from
the Python type of the value, which is all the schema allows here.

It is an optimisation, never a second definition of the format: a value outside the
fast path (a datetime, an integer beyond 64 bits, a missing field, a wrong type)
raises ``SlowPath`` and the caller encodes that record with fastavro, which then
writes it or raises its own error. The bytes are fastavro's, byte for byte
(``tests/schemas/test_compiled_writer.py`` checks it on generated events).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Out = list[bytes]
Writer = Callable[[Any, Out], None]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack
_SMALL = [bytes([n]) for n in range(128)]


class SlowPath(Exception):
    """This value is not for the compiled writer: encode the record with fastavro."""


class UnsupportedSchemaError(Exception):
    """The compiled writer has no fast path for this schema (the caller keeps fastavro)."""


def _long_bytes(n: int) -> bytes:
    """Zigzag varint of a 64-bit integer."""
    z = (n << 1) ^ (n >> 63)
    if z < 128:
        return _SMALL[z]
    out = bytearray()
    while z > 127:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _write_long(value: Any, out: Out) -> None:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise SlowPath
    out.append(_long_bytes(value))


def _write_string(value: Any, out: Out) -> None:
    if type(value) is not str:
        raise SlowPath
    data = value.encode()
    out.append(_long_bytes(len(data)))
    out.append(data)


def _write_double(value: Any, out: Out) -> None:
    if type(value) is not float and type(value) is not int:
        raise SlowPath
    out.append(_pack_double(value))


def _write_float(value: Any, out: Out) -> None:
    if type(value) is not float and type(value) is not int:
        raise SlowPath
    out.append(_pack_float(value))


def _write_boolean(value: Any, out: Out) -> None:
    if value is True:
        out.append(b"\x01")
    elif value is False:
        out.append(b"\x00")
    else:
        raise SlowPath


def _write_union_int(value: Any, out: Out) -> None:
    # In a union, fastavro takes the "int" branch only for values that fit 32 bits.
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise SlowPath
    out.append(_long_bytes(value))


def _write_null(value: Any, out: Out) -> None:
    if value is not None:
        raise SlowPath


_PRIMITIVES: dict[str, Writer] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_long,  # the same zigzag varint; the range is the schema's business
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "string": _write_string,
}

# The Python types each primitive branch accepts, as fastavro's validation has them
# (a bool is an int to Python, not to Avro).
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "string": (str,),
}
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema["type"])
    return "union"


def compile_writer(schema: Any, named: dict[str, Any] | None = None) -> Writer:
    """A writer for ``schema`` (fastavro's parsed form); ``UnsupportedSchemaError`` for
    types it has no fast path for (fixed, bytes, unions of several complex types...).
    ``named``: the named types defined so far, for a later reference by name (a record
    used twice is defined once, then named)."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return _union(schema, named)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in named:
            return compile_writer(named[schema], named)
        raise UnsupportedSchemaError(schema)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if kind == "long" and logical in (None, "timestamp-millis"):
        return _write_long  # an int as it is; a datetime goes to fastavro's conversion
    if logical is not None:
        raise UnsupportedSchemaError(logical)
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind in ("enum", "record") and "name" in schema:
        named[schema["name"]] = schema
    if kind == "enum":
        return _enum(schema["symbols"])
    if kind == "map":
        return _map(compile_writer(schema["values"], named))
    if kind == "array":
        return _array(compile_writer(schema["items"], named))
    if kind == "record":
        return _record(schema, named)
    raise UnsupportedSchemaError(kind)


def _enum(symbols: list[str]) -> Writer:
    index = {s: _long_bytes(i) for i, s in enumerate(symbols)}

    def write(value: Any, out: Out) -> None:
        try:
            out.append(index[value])
        except (KeyError, TypeError):
            raise SlowPath from None

    return write


def _map(values: Writer) -> Writer:
    def write(value: Any, out: Out) -> None:
        if not isinstance(value, dict):
            raise SlowPath
        if value:
            out.append(_long_bytes(len(value)))
            for key, item in value.items():
                _write_string(key, out)
                values(item, out)
        out.append(b"\x00")

    return write


def _array(items: Writer) -> Writer:
    # One block of all the items, then the empty block: fastavro's layout.
    def write(value: Any, out: Out) -> None:
        if not isinstance(value, list):
            raise SlowPath
        if value:
            out.append(_long_bytes(len(value)))
            for item in value:
                items(item, out)
        out.append(b"\x00")

    return write


def _record(schema: Any, named: dict[str, Any] | None = None) -> Writer:
    named = {} if named is None else named
    fields = [(f["name"], compile_writer(f["type"], named)) for f in schema["fields"]]

    def write(value: Any, out: Out) -> None:
        if not isinstance(value, dict):
            raise SlowPath
        try:
            for name, field in fields:
                field(value[name], out)
        except KeyError:
            raise SlowPath from None  # fastavro decides what a missing field means

    return write


def _union(branches: list[Any], named: dict[str, Any]) -> Writer:
    branches = [named.get(b, b) if isinstance(b, str) else b for b in branches]
    names = [_type_name(b) for b in branches]
    if any(n not in _PRIMITIVES and n not in ("record", "map", "enum", "array") for n in names):
        raise UnsupportedSchemaError(f"union of {names}")
    complex_ = [i for i, n in enumerate(names) if n not in _PRIMITIVES]
    if len(complex_) > 1:
        raise UnsupportedSchemaError(f"union of {names}: more than one complex branch")
    if "float" in names and "double" in names:
        raise UnsupportedSchemaError("union of float and double")  # fastavro's own preference
    # Python type -> (branch index, its writer): the first branch, in the union's order,
    # that fastavro's validation would accept a value of that type in.
    by_type: dict[type, tuple[bytes, Writer]] = {}
    for i, name in enumerate(names):
        for py_type in _ACCEPTS.get(name, ()):
            if py_type not in by_type:
                writer = _write_union_int if name == "int" else _PRIMITIVES[name]
                by_type[py_type] = (_long_bytes(i), writer)
    if complex_:
        i = complex_[0]
        if names[i] == "enum":
            raise UnsupportedSchemaError("union with an enum branch")  # a str would be ambiguous
        py_type = list if names[i] == "array" else dict
        by_type[py_type] = (_long_bytes(i), compile_writer(branches[i], named))

    def write(value: Any, out: Out) -> None:
        chosen = by_type.get(type(value))
        if chosen is None:
            raise SlowPath
        out.append(chosen[0])
        chosen[1](value, out)

    return write


def record_encoder(schema: Any) -> Callable[[dict[str, Any]], bytes]:
    """``record -> bytes`` for a parsed record schema; raises ``SlowPath`` per record."""
    write = _record(schema)

    def encode(record: dict[str, Any]) -> bytes:
        out: Out = []
        write(record, out)
        return b"".join(out)

    return encode
