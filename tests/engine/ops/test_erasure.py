"""Erasure's pure parts: what a scrub overwrites, and the ``lead.erased`` event (schema fields
only, no personal data, the same event whenever it is made again)."""

from __future__ import annotations

import re

from engine.flows import parse_flow
from engine.ids import event_id, id_timestamp_ms, new_lead_id
from engine.ops.erasure import ERASURE_STEP_INDEX, erased_event
from engine.ops.erasure_rows import ERASED_EVENT, _clear_values, _scrubbed, _token
from engine.sealing import ERASED, new_data_key, seal
from schemas.codec import EventCodec

LEAD = new_lead_id()
OTHER = new_lead_id()
KEY = new_data_key()

FLOW = parse_flow(
    """
id: solar
name: Solar
sensitive_fields: [email]
steps:
  - {id: web, name: Web, kind: source, settings: {fields: [{name: email, type: email}]}}
"""
)


def test_a_scrub_overwrites_the_leads_tokens_and_its_clear_values_and_nothing_else() -> None:
    mine, theirs = seal(KEY, LEAD, "ada@example.com"), seal(KEY, OTHER, "bob@example.com")
    snapshot = {
        "vars": {
            "lead.email": mine,
            "lead.first_name": "Adalind",  # a flow that does not seal it: clear, overwritten
            "lead.state": "TX",  # too short to search for safely: kept
            "lead.count": 12345,
        },
        "request": {"body": f"first=Adalind&email={mine}&ref={theirs}"},
    }
    clears = _clear_values([snapshot])
    assert clears == ["Adalind"]
    out = _scrubbed(snapshot, _token(LEAD), clears)
    assert out["vars"] == {
        "lead.email": ERASED,
        "lead.first_name": ERASED,
        "lead.state": "TX",
        "lead.count": 12345,
    }
    assert out["request"]["body"] == f"first={ERASED}&email={ERASED}&ref={theirs}"
    assert _scrubbed(out, _token(LEAD), clears) == out  # idempotent


def test_the_erased_event_is_valid_holds_nothing_personal_and_is_made_the_same_again() -> None:
    event = erased_event(LEAD, FLOW, erased_ms=id_timestamp_ms(LEAD) + 90 * 86_400_000)
    assert event == erased_event(LEAD, FLOW, erased_ms=id_timestamp_ms(LEAD) + 90 * 86_400_000)
    assert event["type"] == ERASED_EVENT and event["vars"] == {} and event["appended"] == {}
    assert event["id"] == event_id(LEAD, id_timestamp_ms(LEAD), ERASURE_STEP_INDEX, 0)
    assert event["total_ms"] == 2**31 - 1  # an int in the schema: 90 days do not fit
    decoded = EventCodec().decode(EventCodec().encode(event))
    assert decoded["lead_id"] == LEAD and decoded["type"] == ERASED_EVENT
    text = str(dict(decoded))
    assert not re.search(r"@|enc:v1:", text)
