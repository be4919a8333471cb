"""Schema evolution: every event ever written stays readable by the current code."""

import io

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codec import MAGIC, EventCodec, historical_schemas, load_schema
from schemas.compatibility import incompatibilities
from tests.factories import make_lead_events

CURRENT = load_schema()


@pytest.mark.parametrize("old", historical_schemas(), ids=lambda s: str(len(s["fields"])))
def test_fields_added_since_an_old_version_all_have_defaults(old: dict) -> None:  # type: ignore[type-arg]
    old_names = {f["name"] for f in old["fields"]}
    added = [f for f in CURRENT["fields"] if f["name"] not in old_names]
    assert [f["name"] for f in added if "default" not in f] == []


@pytest.mark.parametrize("old", historical_schemas(), ids=lambda s: str(len(s["fields"])))
def test_no_field_was_removed_or_retyped_beyond_a_promotion(old: dict) -> None:  # type: ignore[type-arg]
    current = {f["name"]: f["type"] for f in CURRENT["fields"]}
    for field in old["fields"]:
        assert field["name"] in current, f"{field['name']} removed"
    assert incompatibilities(CURRENT, old) == []


@pytest.mark.parametrize("old", historical_schemas(), ids=lambda s: str(len(s["fields"])))
def test_an_event_written_with_an_old_schema_decodes_with_defaults(old: dict) -> None:  # type: ignore[type-arg]
    parsed = fastavro.parse_schema(old)
    old_names = {f["name"] for f in old["fields"]}
    event = {k: v for k, v in make_lead_events()[1].items() if k in old_names}
    buf = io.BytesIO()
    buf.write(MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")))
    fastavro.schemaless_writer(buf, parsed, event)
    codec = EventCodec()
    decoded = codec.decode(buf.getvalue())
    assert decoded["id"] == event["id"]
    assert decoded["attempt"] == 1  # a field the old writer never knew
    assert decoded["module_id"] is None
    # A step reading it gets the whole event, and writes it on in the current layout.
    handed_off = codec.decode_handoff(buf.getvalue())
    assert handed_off == decoded
    assert codec.decode(codec.encode(handed_off)) == decoded


def test_v4_acceptance_criteria_as_json_text_still_read_and_v5_writes_the_record() -> None:
    v4 = fastavro.parse_schema(historical_schemas()[3])
    assert next(f for f in v4["fields"] if f["name"] == "acceptance_criteria")["type"] == [
        "null",
        "string",
    ]
    old = {**make_lead_events()[0], "acceptance_criteria": '{"match":"all","rules":[]}'}
    old = {k: v for k, v in old.items() if k in {f["name"] for f in v4["fields"]}}
    buf = io.BytesIO()
    buf.write(MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(v4), "CRC-64-AVRO")))
    fastavro.schemaless_writer(buf, v4, old)
    decoded = EventCodec().decode(buf.getvalue())
    assert decoded["acceptance_criteria"] == '{"match":"all","rules":[]}'
    assert decoded["firehose"] is None and decoded["rule_results"] is None
    record = {"match": "all", "passed": True, "rules": []}
    new = {**make_lead_events()[0], "acceptance_criteria": record}
    assert EventCodec().decode(EventCodec().encode(new))["acceptance_criteria"] == record
