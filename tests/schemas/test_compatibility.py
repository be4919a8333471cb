"""The compatibility check names the field that broke (the registry only says 409)."""

from __future__ import annotations

import copy
from typing import Any

from schemas.codec import historical_schemas, load_schema
from schemas.compatibility import incompatibilities

CURRENT = load_schema()


def _with_field(schema: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for field in out["fields"]:
        if field["name"] == name:
            field.update(changes)
    return out


def test_v4_reads_every_earlier_version_and_widens_the_two_timings() -> None:
    v3, v4 = historical_schemas()[2:4]
    assert incompatibilities(v4, v3) == []
    # The reverse (FULL's forward half) is refused: a v3 reader cannot read a long.
    assert incompatibilities(v3, v4) == [
        "lag_ms: writer long is not readable as int",
        "total_ms: writer long is not readable as int",
    ]


def test_v5_reads_v4_and_only_the_structured_acceptance_criteria_are_new_to_v4() -> None:
    v4, v5 = historical_schemas()[3:5]
    assert incompatibilities(v5, v4) == []
    # BACKWARD only: a v4 reader has no branch for the AcceptanceCriteria record (v5 keeps
    # a string branch so v4's JSON text stays readable, but never writes it).
    assert incompatibilities(v4, v5) == [
        "acceptance_criteria: writer record AcceptanceCriteria matches no branch of"
        " union[null, string]"
    ]


def test_v6_and_v5_read_each_other() -> None:
    # Two optional fields added (field_errors, original_failure): FULL, a v5 reader skips them.
    v5 = historical_schemas()[4]
    assert incompatibilities(CURRENT, v5) == []
    assert incompatibilities(v5, CURRENT) == []


def test_narrowing_a_field_is_named() -> None:
    narrowed = _with_field(CURRENT, "start_timestamp", type="int")
    assert incompatibilities(narrowed, CURRENT) == [
        "start_timestamp: writer long is not readable as int"
    ]


def test_a_field_added_without_a_default_is_named() -> None:
    added = copy.deepcopy(CURRENT)
    added["fields"].append({"name": "channel", "type": "string"})
    assert incompatibilities(added, CURRENT) == [
        "channel: added without a default (old events lack it)"
    ]


def test_a_removed_field_is_fine_for_a_reader_and_a_default_makes_an_added_one_fine() -> None:
    fewer = copy.deepcopy(CURRENT)
    fewer["fields"] = [f for f in fewer["fields"] if f["name"] != "cost"]
    assert incompatibilities(fewer, CURRENT) == []
    more = copy.deepcopy(CURRENT)
    more["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    assert incompatibilities(more, CURRENT) == []


def test_inside_unions_maps_and_nested_records_the_path_is_given() -> None:
    enum_cut = _with_field(
        CURRENT,
        "outcome",
        type={"type": "enum", "name": "Outcome", "symbols": ["success", "failure"]},
    )
    assert incompatibilities(enum_cut, CURRENT) == [
        "outcome: enum symbols ['error'] unknown to the reader (and no default)"
    ]
    vars_narrowed = _with_field(
        CURRENT, "vars", type={"type": "map", "values": ["null", "boolean", "long", "string"]}
    )
    assert incompatibilities(vars_narrowed, CURRENT) == [
        "vars{}: writer double matches no branch of union[null, boolean, long, string]"
    ]
    response = next(f for f in CURRENT["fields"] if f["name"] == "response")
    record = copy.deepcopy(response["type"][1])
    next(f for f in record["fields"] if f["name"] == "status")["type"] = "string"
    changed = _with_field(CURRENT, "response", type=["null", record])
    assert incompatibilities(changed, CURRENT) == [
        "response.status: writer int is not readable as string"
    ]
