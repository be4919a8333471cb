"""A step's sealing (``engine.runtime.sealer``) with keys in memory: what an intake body and
an event look like once sealed, what a step sees once opened, and an erased lead."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
import pytest

from engine.flows import parse_flow
from engine.runtime.sealer import _OPENED_LEADS, LeadSealer
from engine.sealing import ERASED, PREFIX, is_sealed, new_data_key
from engine.state.errors import StateUnavailableError
from engine.state.keys import LeadKeys
from schemas.codec import EncodedSnapshot

LEAD = "01JABCDEFGHJKMNPQRSTVWXYZ0"
FLOW = parse_flow("""
id: solar
name: Solar
sensitive_fields: [income]
steps:
  - id: web
    name: Web
    kind: source
    settings:
      fields:
        - {name: email, type: email}
        - {name: ssn, type: ssn}
        - {name: dob, type: date}
        - {name: income}
""")


class MemoryKeys:
    """``LeadKeys``' interface, in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes | None] = {}
        self.indexed: list[tuple[str, list[str], list[str]]] = []
        self.fetches = 0
        self.asked: list[set[str]] = []

    def ensure(self, flow_id: str, lead_ids: list[str]) -> dict[str, bytes | None]:
        for lead_id in lead_ids:
            self.keys.setdefault(lead_id, new_data_key())
        return {i: self.keys[i] for i in lead_ids}

    def fetch(self, lead_ids: Any) -> dict[str, bytes | None]:
        self.fetches += 1
        self.asked.append(set(lead_ids))
        return {i: self.keys.get(i) for i in lead_ids}

    def index_person(
        self, flow_id: str, lead_id: str, emails: list[str], phones: list[str]
    ) -> None:
        self.indexed.append((lead_id, emails, phones))

    def close(self) -> None:
        pass


def _sealer() -> tuple[LeadSealer, MemoryKeys]:
    keys = MemoryKeys()
    return LeadSealer(FLOW, cast(LeadKeys, keys)), keys


def test_an_intake_body_is_sealed_field_by_field_as_json_and_the_person_indexed() -> None:
    sealer, keys = _sealer()
    body = b"email=ada%40example.com&ssn=123-45-6789&dob=1984-07-21&income=90000&state=TX"
    sealed, content_type = sealer.seal_body(LEAD, body, "application/x-www-form-urlencoded")
    data = orjson.loads(sealed)
    assert content_type == "application/json"
    assert data["email"] == "ada@example.com" and data["state"] == "TX"
    assert all(data[k].startswith(PREFIX + LEAD) for k in ("ssn", "dob", "income"))
    assert b"123-45" not in sealed and b"1984" not in sealed and b"90000" not in sealed
    assert keys.indexed == [(LEAD, ["ada@example.com"], [])]
    # The source step reads it back clear.
    opened = orjson.loads(sealer.open_body(sealed))
    assert opened == dict(parse_qsl(body.decode()))


def test_an_event_is_sealed_in_its_vars_and_wherever_it_quotes_them() -> None:
    sealer, _ = _sealer()
    event = {
        "lead_id": LEAD,
        "reason": "Too old: lead.dob is 1984-07-21",
        "vars": {"lead.email": "ada@example.com", "lead.dob": "1984-07-21", "lead.dob.year": 1984},
        "request": {"body": "dob=1984-07-21&email=ada%40example.com", "headers": {}},
        "response": {"body": '{"seen": "1984-07-21"}'},
    }
    sealed = sealer.seal_event(event)
    text = orjson.dumps(sealed).decode()
    assert "1984" not in text and "ada@example.com" in text
    assert dict(sealer.open_snapshot(sealed["vars"]).items()) == event["vars"]


def test_a_step_opens_only_what_it_reads_and_its_events_keep_the_tokens_it_came_with() -> None:
    sealer, _ = _sealer()
    first = sealer.seal_event(
        {
            "lead_id": LEAD,
            "reason": None,
            "vars": {"lead.email": "ada@example.com", "lead.dob": "1984-07-21", "lead.state": "TX"},
        }
    )
    opened = sealer.open_snapshot(first["vars"])
    assert opened.get("lead.state") == "TX"  # what a filter reads; nothing sealed opened
    assert opened["lead.dob"] == "1984-07-21" and opened.get("lead.dob") == "1984-07-21"
    # A recipient that quoted the value it read: the request is sealed, the vars keep the
    # very tokens they came with (deterministic sealing would give the same again).
    after = sealer.seal_event(
        {
            "lead_id": LEAD,
            "reason": None,
            "vars": {**opened, "lead.state": "CA"},
            "request": {"body": "dob=1984-07-21&state=CA"},
        }
    )
    assert after["vars"]["lead.dob"] == first["vars"]["lead.dob"]
    assert after["vars"]["lead.state"] == "CA"
    assert "1984" not in orjson.dumps(after).decode()
    # Passed on whole (a step that changed nothing): written with its tokens, never opened.
    same = sealer.seal_event({"lead_id": LEAD, "reason": None, "vars": opened})
    assert type(same["vars"]) is dict and same["vars"] == first["vars"]


def test_a_snapshot_passed_on_unchanged_is_written_as_the_bytes_it_came_in() -> None:
    sealer, _ = _sealer()
    vars_ = {"lead.dob": "1984-07-21", "lead.dob.valid": True, "lead.state": "TX"}
    first = sealer.seal_event({"lead_id": LEAD, "reason": None, "vars": vars_})
    assert first["vars"]["lead.dob.valid"] is True  # a parse flag stays clear
    came = EncodedSnapshot(first["vars"], b"the avro bytes it was read from")
    opened = sealer.open_snapshot(came)
    assert opened.get("lead.state") == "TX" and opened["lead.dob"] == "1984-07-21"
    with pytest.raises(TypeError, match="read-only"):
        opened["lead.state"] = "CA"  # it stands for what came: a change builds a new dict
    # A filter's failure quoting what it read: the reason sealed, the snapshot the very
    # object that came (the codec splices its bytes in rather than encode it again).
    out = sealer.seal_event({"lead_id": LEAD, "reason": "dob 1984-07-21 too old", "vars": opened})
    assert out["vars"] is came
    assert "1984" not in out["reason"]
    # A sensitive value that came clear (declared sensitive after the lead was sealed) is
    # sealed on the way out: that snapshot is not passed on as it came.
    mixed = EncodedSnapshot({**first["vars"], "lead.income": 90000}, b"bytes with 90000 clear")
    out = sealer.seal_event({"lead_id": LEAD, "reason": None, "vars": sealer.open_snapshot(mixed)})
    assert out["vars"] is not mixed and is_sealed(out["vars"]["lead.income"])
    assert out["vars"]["lead.dob"] == first["vars"]["lead.dob"]


class _Record:
    def __init__(self, lead_id: str) -> None:
        self.lead_id = lead_id

    def key(self) -> bytes:
        return self.lead_id.encode()


def test_a_batch_looks_its_keys_up_once_and_only_when_a_sensitive_value_is_read() -> None:
    sealer, keys = _sealer()
    leads = [f"01JABCDEFGHJKMNPQRSTVWXY{i:02d}" for i in range(3)]
    events = [
        sealer.seal_event(
            {
                "lead_id": lead,
                "reason": None,
                "vars": {"lead.dob": "1984-07-21", "lead.state": "TX"},
            }
        )
        for lead in leads
    ]
    keys.asked.clear()
    sealer.prefetch(cast(Any, [_Record(lead) for lead in leads]))
    opened = [sealer.open_snapshot(event["vars"]) for event in events]
    assert [snapshot.get("lead.state") for snapshot in opened] == ["TX"] * 3
    passed = [
        sealer.seal_event({"lead_id": lead, "reason": None, "vars": snapshot})
        for lead, snapshot in zip(leads, opened, strict=True)
    ]
    assert keys.asked == []  # a filter on the state: no key looked up, none unwrapped
    assert [p["vars"] for p in passed] == [e["vars"] for e in events]
    assert [snapshot["lead.dob"] for snapshot in opened] == ["1984-07-21"] * 3
    assert keys.asked[0] == set(leads)  # the first read looks up the whole batch's keys


def test_a_flow_event_without_sensitive_vars_is_written_as_it_is() -> None:
    sealer, keys = _sealer()
    event = {"lead_id": LEAD, "vars": {"lead.email": "a@b.co"}, "reason": None}
    assert sealer.seal_event(event) == event
    assert keys.keys == {}


def test_an_erased_lead_replayed_reads_erased_and_is_never_sealed_again() -> None:
    sealer, keys = _sealer()
    sealed = sealer.seal_event({"lead_id": LEAD, "vars": {"lead.ssn": "123-45-6789"}})
    keys.keys[LEAD] = None  # the key deleted: what LeadKeys.ensure answers for a tombstone
    assert dict(sealer.open_snapshot(sealed["vars"]).items()) == {"lead.ssn": ERASED}
    again = sealer.seal_event({"lead_id": LEAD, "vars": {"lead.ssn": "123-45-6789"}})
    assert again["vars"] == {"lead.ssn": ERASED}


def test_a_key_store_that_cannot_answer_stops_the_lead_instead_of_reading_it_unreadable() -> None:
    sealer, keys = _sealer()
    sealed = sealer.seal_event({"lead_id": LEAD, "vars": {"lead.ssn": "123-45-6789"}})

    def down(_: Any) -> dict[str, bytes | None]:
        raise StateUnavailableError("lead keys: fetch failed (OperationalError)")

    keys.fetch = down  # type: ignore[method-assign,assignment]  # the store goes down
    opened = sealer.open_snapshot(sealed["vars"])  # nothing read yet: no key needed
    with pytest.raises(StateUnavailableError):
        opened["lead.ssn"]  # read: the key is needed, and its store is down


def test_a_body_that_is_not_a_mapping_is_sealed_whole_and_opened_back_as_it_came() -> None:
    sealer, _ = _sealer()
    broken = b'{"ssn": "123-45-6789", "dob": "1984-07-21"'  # cut short: not JSON
    sealed, content_type = sealer.seal_body(LEAD, broken, "application/json")
    assert sealed.startswith(PREFIX.encode()) and b"1984" not in sealed
    assert content_type == "application/json"
    assert sealer.open_body(sealed) == broken


def test_typed_values_come_back_typed_from_a_sealed_json_body() -> None:
    sealer, _ = _sealer()
    sealed, _ = sealer.seal_body(LEAD, b'{"income": 90000, "ssn": null}', "application/json")
    assert orjson.loads(sealer.open_body(sealed)) == {"income": 90000, "ssn": None}


def test_the_sources_recorded_request_body_is_sealed_whole() -> None:
    sealer, _ = _sealer()
    event = {
        "lead_id": LEAD,
        "vars": {"lead.id": LEAD},  # a rejected body: nothing typed
        "request": {"body": '{"ssn": "123-45-6789", "dob": "1984-07-21"', "headers": {}},
    }
    sealed = sealer.seal_event(event, whole_request_body=True)
    assert sealed["request"]["body"].startswith(PREFIX + LEAD)
    assert "1984" not in orjson.dumps(sealed).decode()


def test_the_values_that_failed_a_rule_are_sealed_where_the_field_is_sensitive() -> None:
    sealer, _ = _sealer()
    shown = {"lead.income": "'90000'", "lead.email": "'ada@example.com'"}
    result = {"name": "Rich", "rule": "{}", "passed": False, "failed_values": shown}
    event = {
        "lead_id": LEAD,
        "vars": {"lead.email": "ada@example.com", "lead.income": "90000"},
        "failed_values": shown,
        "rule_results": [result],
        "acceptance_criteria": {"match": "all", "passed": False, "rules": [result]},
    }
    sealed = sealer.seal_event(event)
    text = orjson.dumps(sealed).decode()
    assert "90000" not in text
    assert sealed["failed_values"]["lead.email"] == "'ada@example.com'"  # not sensitive
    assert sealed["failed_values"]["lead.income"].startswith(PREFIX + LEAD)


def test_what_a_step_read_is_sealed_where_quoted_after_the_sealer_forgot_its_lead() -> None:
    """A calling step may hold more leads in flight than the sealer's memory of recent
    leads: the values a handling opened come from the snapshot it read, so a request that
    quotes one is sealed however many leads were read in between."""
    sealer, _ = _sealer()
    first = sealer.seal_event({"lead_id": LEAD, "reason": None, "vars": {"lead.dob": "1984-07-21"}})
    opened = sealer.open_snapshot(first["vars"])
    assert opened["lead.dob"] == "1984-07-21"
    for i in range(_OPENED_LEADS + 10):
        other = f"01JOTHER{i:018d}"
        seen = sealer.seal_event({"lead_id": other, "reason": None, "vars": {"lead.dob": "1990"}})
        assert sealer.open_snapshot(seen["vars"])["lead.dob"] == "1990"
    quoted = {
        "lead_id": LEAD,
        "reason": None,
        "vars": opened,
        "request": {"body": "dob=1984-07-21"},
    }
    out = sealer.seal_event(quoted, read=opened)
    assert out["vars"] is first["vars"] and "1984" not in orjson.dumps(out).decode()
    # An event whose vars are a new dict (a delivery's: the snapshot and what it appended)
    # knows what was opened only from ``read``.
    appended = {**quoted, "vars": {**opened, "appended.buyer.id": "b-1"}}
    out = sealer.seal_event(appended, read=opened)
    assert out["vars"]["lead.dob"] == first["vars"]["lead.dob"]
    assert "1984" not in orjson.dumps(out).decode()
    # Passed on as it came and nothing of it opened: written as it is, nothing to seal.
    untouched = sealer.open_snapshot(first["vars"])
    assert (
        sealer.seal_event({"lead_id": LEAD, "reason": None, "vars": untouched}, read=untouched)[
            "vars"
        ]
        is first["vars"]
    )
