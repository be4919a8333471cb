"""The schema v5 fields on real events: a flow run on the broker, every new field checked
where it applies (source, enhancement, filter, recipient error), as a reader decodes it."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import yaml

from engine import __version__
from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ids import new_lead_id
from engine.intake.records import intake_headers
from engine.ops.submit import publish_leads
from engine.runtime.kafka.clients import new_producer
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import intake_topic
from tests.factories import DEMO_FLOW
from tests.kafka_helpers import events_by_lead, read_events, run_steps, wait_for_completion

pytestmark = pytest.mark.stack

GOOD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone_1": "(512) 555-0123",
    "state": "TX",
    "tcpa_consent": True,
}


def fields_flow(flow_id: str, url: str) -> Flow:
    """The basic flow with a paid phone check (retried once) before the filter, acceptance
    criteria and ping limits on the source, and a buyer that times out after 500 ms."""
    data: dict[str, Any] = yaml.safe_load(DEMO_FLOW.read_text(encoding="utf-8"))
    data["id"] = flow_id
    source, area, buyer = data["steps"]
    source["settings"]["acceptance"] = {
        "rules": [{"name": "Adult", "field": "lead.state", "op": "exists"}]
    }
    source["settings"]["caps"] = [{"maximum": 1000, "duration": "day"}]
    source["settings"]["intake"] = {
        "auth": {"key_env": "FIELDS_TEST_KEY"},
        "ping": {
            "fields": ["state"],
            "limits": [
                {"maximum": 1000, "duration": "day", "scope": "flow"},
                {"name": "burst", "maximum": 50, "duration": "minute"},
            ],
        },
    }
    phone = {
        "id": "phone-check",
        "kind": "enhancement",
        "name": "Phone check",
        "settings": {
            "url": f"{url}/enhance/phone",
            "key": "phone_check",
            "cost": 0.05,
            "timeout_ms": 500,
            "mapping": {"phone": "lead.phone_1", "email": "lead.email"},
            "retry": {"attempts": 2, "initial_backoff_ms": 50},
        },
    }
    buyer["settings"]["url"] = f"{url}/leads"
    buyer["settings"]["timeout_ms"] = 500
    data["steps"] = [source, phone, area, buyer]
    for destination in data.get("destinations", []):
        destination["prefix"] = flow_id
    return parse_flow(yaml.safe_dump(data), f"{flow_id}.yaml")


def post_over_http(
    settings: Settings,
    flow: Flow,
    lead: dict[str, Any],
    client_ip: str,
    ping: tuple[str, float] | None = None,
) -> str:
    """An intake record as the HTTP intake writes it (its recorded request, client included;
    with ``ping``: a post for that ping id, at its price)."""
    lead_id = new_lead_id()
    producer = new_producer(settings)
    request = {
        "method": "POST",
        "uri": "/flows/x/sources/source",
        "headers": {},
        "client_ip": client_ip,
    }
    ping_id, price = ping or (None, None)
    headers = intake_headers("application/json", "source", request, ping_id, price)
    producer.produce(intake_topic(flow.id), orjson.dumps(lead), lead_id.encode(), headers=headers)
    assert producer.flush(30) == 0
    return lead_id


def by_type(timeline: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in timeline}


Run = tuple[Flow, dict[str, str], dict[str, list[dict[str, Any]]]]


def run_fields_flow(stack: Settings, unique_id: str) -> Run:
    """``fields_flow`` run on the broker with one lead per case: the flow, each case's
    lead id, and every lead's timeline as a reader decodes it."""
    buyer = BuyerServer(port=0, mix=False, slow_seconds=2.0)
    buyer.start_in_thread()
    flow = fields_flow(unique_id, buyer.url.rsplit("/", 1)[0])
    prepare_topics(stack, flow)
    stop = threading.Event()
    threads = run_steps(stack, flow, stop)
    try:
        cases = {
            "delivered": {**GOOD, "email": "ada@example.com"},
            "out_of_area": {**GOOD, "email": "wy@example.com", "state": "WY"},
            "slow": {**GOOD, "email": "ada+slow@example.com"},
            "rejected": {"first_name": "NoEmail"},
        }
        ids = dict(zip(cases, publish_leads(stack, flow.id, list(cases.values())), strict=True))
        ids["over_http"] = post_over_http(
            stack, flow, {**GOOD, "email": "h@example.com"}, "203.0.113.7"
        )
        ids["pinged"] = post_over_http(
            stack, flow, {**GOOD, "email": "p@example.com"}, "203.0.113.8", ("01PING", 4.5)
        )
        wait_for_completion(stack, flow, len(ids), timeout=120)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        buyer.stop()
    return flow, ids, events_by_lead(read_events(stack, flow))


def test_a_runs_events_carry_the_v5_and_v6_fields_where_they_apply(
    stack: Settings, unique_id: str
) -> None:
    flow, ids, timelines = run_fields_flow(stack, unique_id)
    delivered, out_of_area, slow = ids["delivered"], ids["out_of_area"], ids["slow"]
    every = [e for timeline in timelines.values() for e in timeline]
    assert {e["version"] for e in every} == {"6"}

    # Every event: where the flow streams (its two destinations) and its ping limits.
    assert all(e["firehose"] == {"destinations": [d.key for d in flow.destinations]} for e in every)
    assert {e["flow_ping_limits"][0]["id"] for e in every} == {f"ping:flow/{flow.id}:day@UTC"}
    assert {e["source_ping_limits"][0]["id"] for e in every} == {
        f"ping:source/{flow.id}/source:minute@UTC:burst"
    }
    # module_id is the step kind's module, package_version the installed engine's.
    events = by_type(timelines[delivered])
    assert events["filter.passed"]["module_id"] == "engine.steps.filter"
    assert events["enhancement.success"]["module_id"] == "engine.steps.enhancement"
    assert {e["package_version"] for e in every if e["module_id"]} == {__version__}

    # The source: arrival stamped before parsing, the criteria judged, the configuration.
    submitted, accepted = events["source.submitted"], events["source.accepted"]
    arrival = submitted["vars"]["submission.timestamp"]
    assert submitted["start_timestamp"] == submitted["end_timestamp"] == arrival
    assert arrival <= accepted["start_timestamp"] <= accepted["end_timestamp"]
    assert submitted["timestamp"] <= accepted["timestamp"]  # decoded as datetimes
    assert accepted["acceptance_criteria"]["passed"] is True
    assert accepted["acceptance_criteria"]["rules"][0]["name"] == "Adult"
    assert submitted["acceptance_criteria"]["passed"] is None
    assert submitted["source_config_version"] == flow.steps[0].settings.config_version  # type: ignore[union-attr]
    assert submitted["client_ip"] is None  # not over HTTP
    assert {e["client_ip"] for e in timelines[ids["over_http"]][:2]} == {"203.0.113.7"}
    # Limits are evaluated on a ping, so a lead posted for an admitted ping says false.
    assert events["source.accepted"]["ping_limit_reached"] is None
    assert by_type(timelines[ids["pinged"]])["source.accepted"]["ping_limit_reached"] is False
    assert by_type(timelines[ids["pinged"]])["source.accepted"]["cost"] == 4.5

    # The paid enhancement and the filter's rules.
    assert events["enhancement.success"]["cost"] == 0.05
    assert events["enhancement.success"]["retry_attempts"] == 0
    assert events["flow.completed"]["cost"] == pytest.approx(2.55)
    assert events["filter.passed"]["rules_evaluated"] == 2
    failed = by_type(timelines[out_of_area])["filter.failed"]
    assert failed["failed_values"] == {"lead.state": "'WY'"}
    assert failed["would_have_destination"] == "premier"
    assert [r["passed"] for r in failed["rule_results"]] == [False, True]

    # v6: a rejected lead lists each failed validation, and the criteria judged anyway.
    rejected = by_type(timelines[ids["rejected"]])["source.rejected"]
    assert [(e["field"], e["check"]) for e in rejected["field_errors"]] == [
        ("last_name", "required"),
        ("email", "required"),
        ("phone_1", "required"),
        ("state", "required"),
        ("tcpa_consent", "required"),
    ]
    assert rejected["reason"] == "; ".join(e["message"] for e in rejected["field_errors"])
    assert rejected["acceptance_criteria"]["passed"] is False

    # The buyer that did not answer within 500 ms.
    error = by_type(timelines[slow])["recipient.error"]
    assert (error["timeout_ms"], error["timed_out"], error["retry_attempts"]) == (500, True, 0)
