"""HTTP intake of a flow that seals: the intake topic never holds a clear sensitive value,
and without a master key the lead is refused (503), never published in clear."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.demo.buyer import BuyerServer
from engine.flows import Flow
from engine.runtime.registry import apply_flow, delete_flow
from engine.sealing import new_master_key_text
from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, intake_flow
from tests.kafka_helpers import run_steps, wait_for_completion
from tests.security.test_sealing_at_rest import _raw_records

pytestmark = pytest.mark.stack

AUTH = {"X-API-Key": API_KEY}
LEAD = {**GOOD_LEAD, "ssn": "345-67-8901", "dob": "1979-11-30", "income": "IncomeSecret4242"}
CLEAR = ("345-67-8901", "345678901", "1979-11-30", "IncomeSecret4242")


def sealing_flow(flow_id: str, buyer_url: str) -> Flow:
    definition: dict[str, Any] = intake_flow(flow_id, buyer_url).model_dump(mode="json")
    definition["sensitive_fields"] = ["income"]
    definition["steps"][0]["settings"]["fields"] += [
        {"name": "ssn", "type": "ssn"},
        {"name": "dob", "type": "date"},
        {"name": "income"},
    ]
    definition["steps"][2]["settings"]["mapping"]["dob"] = "lead.dob"
    return Flow.model_validate(definition)


@pytest.fixture
def sealing(
    api_settings: Settings, unique_id: str, buyer: BuyerServer
) -> Iterator[tuple[Flow, threading.Event]]:
    flow = sealing_flow(unique_id, buyer.url)
    apply_flow(api_settings, flow)
    stop = threading.Event()
    yield flow, stop
    stop.set()
    delete_flow(api_settings, flow.id)


def test_a_form_lead_is_sealed_before_the_intake_topic(
    api_settings: Settings,
    api_url: str,
    sealing: tuple[Flow, threading.Event],
    buyer: BuyerServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    flow, stop = sealing
    threads = run_steps(api_settings, flow, stop)
    answer = httpx.post(
        f"{api_url}/flows/{flow.id}/sources/source", data=LEAD, headers=AUTH, timeout=30
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "success"
    wait_for_completion(api_settings, flow, 1)
    stop.set()
    for thread in threads:
        thread.join(30)
    records = _raw_records(api_settings, flow.id)
    intake = [value for topic, *_, value in records if topic.endswith(".intake")]
    assert len(intake) == 1 and b"enc:v1:" in intake[0]
    for topic, _, offset, value in records:
        assert [c for c in CLEAR if c.encode() in value] == [], f"{topic}@{offset}"
    assert any(b.get("dob") == "1979-11-30" for b in buyer.bodies)


def test_without_a_master_key_the_lead_is_refused_not_published(
    api_settings: Settings,
    api_url: str,
    sealing: tuple[Flow, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEADFLOW_MASTER_KEY", raising=False)
    monkeypatch.delenv("LEADFLOW_MASTER_KEY_FILE", raising=False)
    flow, _ = sealing
    answer = httpx.post(
        f"{api_url}/flows/{flow.id}/sources/source", json=LEAD, headers=AUTH, timeout=30
    )
    assert answer.status_code == 503
    assert "LEADFLOW_MASTER_KEY" in answer.json()["reason"]
    assert [t for t, *_ in _raw_records(api_settings, flow.id) if t.endswith(".intake")] == []
