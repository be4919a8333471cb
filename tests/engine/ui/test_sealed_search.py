"""The UI's search box finds leads whose flow seals the email and phone: their rows hold
only ciphertext, so they are found through the person index's keyed hash
(``engine.state.keys.search_person``) - with the same scopes as any search (clear for
``pii:read``, masked otherwise, a flow-restricted key its flow only), next to leads found in
clear, and never once erased."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.access.store import create_key
from engine.api.app import create_app
from engine.ids import new_lead_id
from engine.sealing import MasterKey, master_key_from_env, new_master_key_text, seal
from engine.settings import Settings
from engine.state.keys import LeadKeys, erase_leads, finish_erasure
from engine.state.postgres import connect as state_connect
from engine.state.postgres import migrate_state
from engine.topics import events_topic
from projectors.batch import Record, build_batch
from projectors.generations import migrate_database
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events

pytestmark = pytest.mark.stack

EMAIL = "ada.sealed@example.com"  # as the source step normalises it
PHONE = "5125550123"
CLEAR_EMAIL = "bob.clear@example.com"
CLEAR_PHONE = "5125550199"


@dataclass(frozen=True)
class Leads:
    settings: Settings
    flow: str
    other_flow: str
    sealed: str  # EMAIL and PHONE, sealed, in ``flow``
    sealed_elsewhere: str  # the same person, sealed, in ``other_flow``
    stranger: str  # someone else, sealed, in ``flow``
    clear: str  # CLEAR_EMAIL and CLEAR_PHONE in clear, in ``flow``


def _project(settings: Settings, events: list[dict[str, Any]]) -> None:
    codec = EventCodec()
    records = [
        Record(events_topic(e["flow_id"], e["step_id"]), 0, n, codec.encode(e))
        for n, e in enumerate(events)
    ]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, records))


def _lead(
    flow: str, submitted_ms: int, values: dict[str, Any], lead_id: str | None = None
) -> list[dict[str, Any]]:
    made = make_lead_events(flow, lead_id, submitted_ms)
    events: list[dict[str, Any]] = [dict(e) for e in made]
    for event in events:
        event["vars"] = {**event["vars"], **values}
    return events


def _sealed_lead(
    keys: LeadKeys, flow: str, submitted_ms: int, email: str, phone: str
) -> list[dict[str, Any]]:
    """A lead of a flow that seals email and phone: tokens in its events, and indexed under
    the values as its intake body held them (``LeadSealer.seal_body``)."""
    lead_id = new_lead_id(submitted_ms)
    key = keys.ensure(flow, [lead_id])[lead_id]
    assert key is not None
    keys.index_person(flow, lead_id, [f"  {email.upper()}"], [f"+1 ({phone[:3]}) {phone[3:]}"])
    values = {"lead.email": seal(key, lead_id, email), "lead.phone_1": seal(key, lead_id, phone)}
    return _lead(flow, submitted_ms, values, lead_id)


@pytest.fixture
def leads(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> Leads:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    master: MasterKey | None = master_key_from_env()
    assert master is not None
    settings = stack.model_copy(
        update={
            "db_schema": unique_id,
            "export_worker_in_api": False,
            "api_key_cache_seconds": 0.0,
        }
    )
    migrate_database(settings)
    migrate_state(settings)
    flow, other = unique_id, f"{unique_id}b"
    now = int(time.time() * 1000) - 60_000
    keys = LeadKeys(settings, master)
    try:
        sealed = _sealed_lead(keys, flow, now, EMAIL, PHONE)
        elsewhere = _sealed_lead(keys, other, now + 1_000, EMAIL, PHONE)
        stranger = _sealed_lead(keys, flow, now + 2_000, "eve@example.com", "5125550777")
    finally:
        keys.close()
    clear = _lead(flow, now + 3_000, {"lead.email": CLEAR_EMAIL, "lead.phone_1": CLEAR_PHONE})
    _project(settings, sealed + elsewhere + stranger + clear)
    return Leads(
        settings,
        flow,
        other,
        sealed[0]["lead_id"],
        elsewhere[0]["lead_id"],
        stranger[0]["lead_id"],
        clear[0]["lead_id"],
    )


def _client(settings: Settings, scopes: list[str], flows: list[str] | None = None) -> TestClient:
    _, key = create_key(settings, "-".join(scopes).replace(":", "_"), scopes, flows)
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})


def _search(client: TestClient, q: str, flow_id: str | None = None) -> list[dict[str, Any]]:
    body = {"q": q} if flow_id is None else {"q": q, "flow_id": flow_id}
    answer = client.post("/ui/api/leads/search", json=body)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["leads"]
    return found


def test_a_sealed_lead_is_found_by_email_and_phone_and_opened_only_for_pii_read(
    leads: Leads,
) -> None:
    pii = _client(leads.settings, ["events:read", "pii:read"])
    person = [leads.sealed_elsewhere, leads.sealed]  # newest first
    for q in (" ADA.Sealed@example.com", "(512) 555-0123", "+1 512 555 0123"):
        found = _search(pii, q)
        assert [r["lead_id"] for r in found] == person, q
        assert {(r["email"], r["phone"]) for r in found} == {(EMAIL, PHONE)}
    only_flow = _search(pii, EMAIL, leads.flow)
    assert [r["lead_id"] for r in only_flow] == [leads.sealed]

    masked = _client(leads.settings, ["events:read"])
    found = _search(masked, PHONE)
    assert [r["lead_id"] for r in found] == person
    shown = str(found)
    assert EMAIL not in shown and PHONE not in shown and "enc:v1:" not in shown
    assert {r["email"] for r in found} == {"a***@example.com"}

    # A key restricted to the other flow finds the person's lead there, and only that one.
    restricted = _client(leads.settings, ["events:read", "pii:read"], [leads.other_flow])
    assert [r["lead_id"] for r in _search(restricted, EMAIL)] == [leads.sealed_elsewhere]

    # Leads of flows that do not seal are found as before, in clear.
    for q in (CLEAR_EMAIL.upper(), CLEAR_PHONE):
        assert [r["lead_id"] for r in _search(pii, q)] == [leads.clear], q
    assert _search(pii, "nobody@example.com") == []


def test_an_erased_person_is_not_found_by_email_or_phone(leads: Leads) -> None:
    pii = _client(leads.settings, ["events:read", "pii:read"])
    with state_connect(leads.settings) as conn:
        with conn.transaction(), conn.cursor() as cur:
            # Phase one: the keys go; the index rows stay until the second phase ends.
            erase_leads(cur, [leads.sealed, leads.clear])
        for q in (EMAIL, PHONE):
            assert [r["lead_id"] for r in _search(pii, q)] == [leads.sealed_elsewhere], q
        # A flow that does not seal keeps its clear rows until the erasure overwrites
        # them: the tombstone keeps the person from being found meanwhile.
        assert _search(pii, CLEAR_EMAIL) == [] and _search(pii, CLEAR_PHONE) == []
        with conn.transaction(), conn.cursor() as cur:
            finish_erasure(cur, leads.sealed)
            erase_leads(cur, [leads.sealed_elsewhere])
            finish_erasure(cur, leads.sealed_elsewhere)
    assert _search(pii, EMAIL) == [] and _search(pii, PHONE) == []
    # Someone else, and a lead looked up by its id, are still there.
    assert [r["lead_id"] for r in _search(pii, "eve@example.com")] == [leads.stranger]
    assert [r["lead_id"] for r in _search(pii, leads.sealed)] == [leads.sealed]
