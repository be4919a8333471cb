"""The compiled writers write fastavro's bytes exactly, and leave to fastavro what they
don't know."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import EventCodec, load_schema
from schemas.compiled_writer import SlowPath, UnsupportedSchemaError, compile_writer, record_encoder
from tests.factories import make_event

CODEC = EventCodec()
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)


NAMED: dict[str, Any] = {}


def values_for(schema: Any) -> st.SearchStrategy[Any]:
    """Any value the (parsed) schema allows, drawn the way a step could produce it."""
    if isinstance(schema, str) and schema in NAMED:
        return values_for(NAMED[schema])  # a named type used again, by its name
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum"):
        NAMED[schema["name"]] = schema
    if isinstance(schema, list):
        return st.one_of([values_for(branch) for branch in schema])
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return st.one_of(
            st.integers(min_value=0, max_value=2**42),
            st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
        )
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "long": LONGS,
        "double": st.one_of(st.floats(), st.integers(min_value=-(2**53), max_value=2**53)),
        "string": st.text(max_size=30),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "map":
        return st.dictionaries(st.text(max_size=12), values_for(schema["values"]), max_size=8)
    if kind == "array":
        return st.lists(values_for(schema["items"]), max_size=4)
    assert kind == "record", kind
    return st.fixed_dictionaries({f["name"]: values_for(f["type"]) for f in schema["fields"]})


def with_fastavro(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


@settings(max_examples=300)
@given(values_for(CODEC.schema))
def test_any_event_the_schema_allows_encodes_to_fastavros_bytes(event: dict[str, Any]) -> None:
    assert CODEC.encode(event) == CODEC.header + with_fastavro(CODEC.schema, event)


@given(values_for(CODEC.schema))
def test_the_compiled_writer_alone_agrees_or_hands_over(event: dict[str, Any]) -> None:
    # Datetimes are fastavro's to convert: the compiled writer must say so, not guess.
    encode = record_encoder(CODEC.schema)
    try:
        assert encode(event) == with_fastavro(CODEC.schema, event)
    except SlowPath:
        assert any(isinstance(v, datetime) for v in event.values())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ms", "12"),
        ("outcome", "maybe"),
        ("flow_version", 2**64),
        ("reason", 5),
        ("vars", {"a": [1]}),
    ],
)
def test_a_mistyped_value_fails_as_fastavro_fails_it(field: str, value: Any) -> None:
    event = {**make_event(), field: value}
    with pytest.raises((ValueError, TypeError, OverflowError, KeyError)):
        CODEC.encode(event)


def test_a_snapshot_value_beyond_64_bits_is_written_as_fastavro_writes_it() -> None:
    # fastavro puts an integer too big for long in the union's double branch.
    event = {**make_event(), "vars": {"lead.big": 2**70}}
    assert CODEC.encode(event) == CODEC.header + with_fastavro(CODEC.schema, event)


@pytest.mark.parametrize(
    "schema",
    [
        "bytes",
        ["null", {"type": "array", "items": "string"}, {"type": "map", "values": "string"}],
        {"type": "fixed", "name": "F", "size": 4},
        ["null", "float", "double"],
        {"type": "int", "logicalType": "date"},
    ],
)
def test_schemas_without_a_fast_path_are_refused_when_compiled(schema: Any) -> None:
    with pytest.raises(UnsupportedSchemaError):
        compile_writer(fastavro.parse_schema(schema) if isinstance(schema, dict) else schema)


def test_the_event_schema_is_compiled_whole() -> None:
    record_encoder(fastavro.parse_schema(load_schema()))  # no UnsupportedSchemaError
