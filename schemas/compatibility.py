"""Can a reader schema read what a writer schema wrote? Avro's resolution rules, by field.

The registry says yes or no (409) when a schema is registered; this says *which field*
broke, so ``make schema-check``, the schema-check test and a refused start name it. The
rules are the Avro specification's "Schema Resolution": a reader's field missing from
the writer needs a default; a field the writer has and the reader lacks is skipped;
``int`` is promoted to ``long``, ``float`` and ``double``, ``long`` to ``float`` and
``double``, ``float`` to ``double``, ``string`` and ``bytes`` to each other; an enum
reader must know every writer symbol (or have a default); every branch of a writer union
must be readable by some reader branch.

BACKWARD (the registry's mode for leadflow's subjects): the new schema reads data of the
last one, ``incompatibilities(reader=new, writer=old)``. FULL would also ask the reverse,
which refuses any widening (``int`` → ``long``), the one change events' timings needed.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"]) if not isinstance(schema["type"], (dict, list)) else "wrapped"
    return str(schema)


def _unwrap(schema: Any) -> Any:
    # {"type": "long", "logicalType": ...} reads as its underlying type; {"type": {...}}
    # (a field's type given as an object) as the object.
    while isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
        schema = schema["type"]
    if isinstance(schema, dict) and schema["type"] in _PRIMITIVES:
        return schema["type"]
    return schema


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _name(schema: Any) -> str:
    return str(schema.get("name", "")).rsplit(".", 1)[-1] if isinstance(schema, dict) else ""


def _describe(schema: Any) -> str:
    schema = _unwrap(schema)
    if isinstance(schema, list):
        return "union[" + ", ".join(_describe(s) for s in schema) + "]"
    if isinstance(schema, dict):
        return f"{schema['type']} {_name(schema)}".strip()
    return str(schema)


def incompatibilities(reader: Any, writer: Any, path: str = "") -> list[str]:
    """Why ``reader`` cannot read data ``writer`` wrote: one line per broken field, by its
    dotted path (``total_ms: writer long is not readable as int``); empty when it can.

    Named types are compared by their definitions inline (leadflow's schema defines each
    one once, where it is used), so a reference by name to a type defined earlier is not
    resolved: such a schema is checked field by field where it is defined.
    """
    reader, writer = _unwrap(reader), _unwrap(writer)
    at = path or "<record>"
    if isinstance(writer, list):
        # Every branch the writer may have taken must be readable.
        return [p for branch in writer for p in incompatibilities(reader, branch, path)]
    if isinstance(reader, list):
        for branch in reader:
            if not incompatibilities(branch, writer, path):
                return []
        for branch in reader:
            # The branch Avro would pick (same kind, same name) says what broke inside it.
            same = _kind(_unwrap(branch)) == _kind(writer) and _name(_unwrap(branch)) == _name(
                writer
            )
            if same and not isinstance(writer, str):
                return incompatibilities(branch, writer, path)
        return [f"{at}: writer {_describe(writer)} matches no branch of {_describe(reader)}"]
    r_kind, w_kind = _kind(reader), _kind(writer)
    if isinstance(reader, str) or isinstance(writer, str):
        if r_kind == w_kind or r_kind in _PROMOTIONS.get(w_kind, set()):
            return []
        return [f"{at}: writer {w_kind} is not readable as {r_kind}"]
    if r_kind != w_kind:
        return [f"{at}: writer {w_kind} is not readable as {r_kind}"]
    if r_kind == "record":
        return _record(reader, writer, path)
    if r_kind == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return [f"{at}: enum symbols {missing} unknown to the reader (and no default)"]
        return []
    if r_kind == "map":
        return incompatibilities(reader["values"], writer["values"], f"{path}{{}}")
    if r_kind == "array":
        return incompatibilities(reader["items"], writer["items"], f"{path}[]")
    if r_kind == "fixed" and reader.get("size") != writer.get("size"):
        return [f"{at}: fixed size {writer.get('size')} read as {reader.get('size')}"]
    return []


def _record(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    problems = []
    if _name(reader) != _name(writer):
        problems.append(f"{path or '<record>'}: record {_name(writer)} read as {_name(reader)}")
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        where = f"{path}.{field['name']}" if path else field["name"]
        old = written.get(field["name"])
        if old is None:
            if "default" not in field:
                problems.append(f"{where}: added without a default (old events lack it)")
            continue
        problems += incompatibilities(field["type"], old["type"], where)
    return problems
