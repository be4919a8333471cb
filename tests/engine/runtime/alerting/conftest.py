"""The alert evaluator's fixtures: a flow with rules on the real stack, a webhook receiver,
events put on the flow's topics as its steps would write them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.events import StepIdentity, Timing, stamp_events
from engine.flows import Flow, parse_flow
from engine.ids import new_lead_id
from engine.runtime.kafka.clients import new_producer
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings
from engine.state.postgres import migrate_state
from engine.steps.base import EventDraft
from engine.topics import events_topic
from schemas.codec import default_codec

HOOK_SECRET = "hook-secret-8f2c"  # the test webhook's own key


class WebhookReceiver(ThreadingHTTPServer):
    """Records every POST; answers ``fail_first`` of them with a 500."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.received: list[dict[str, Any]] = []
        self.answered: list[int] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r["body"]
                for r, s in zip(self.received, self.answered, strict=True)
                if s == 200 and r["body"]["type"] == kind
            ]


class _Hook(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            status = 500 if len(self.server.received) < self.server.fail_first else 200
            self.server.received.append({"headers": dict(self.headers), "body": body})
            self.server.answered.append(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(fail_first=getattr(request, "param", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def alert_settings(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The stack on a schema of its own, with the state tables (the outbox among them)."""
    monkeypatch.setenv("ALERT_HOOK_KEY", HOOK_SECRET)
    settings = stack.model_copy(update={"db_schema": unique_id})
    migrate_state(settings)
    return settings


def flow_text(flow_id: str, hook_url: str) -> str:
    return f"""
id: {flow_id}
name: Alerted flow
topics: {{partitions: 2}}
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields: [{{name: email, type: email, required: true}}]
      caps: [{{maximum: 100, duration: day}}]
  - id: quality
    kind: filter
    name: Quality
    settings:
      rules: [{{name: Has email, field: lead.email, op: exists}}]
alerts:
  - id: bad-source
    metric: source_rejection_rate
    above: 50
    resolve: 30
    min_events: 5
    window_minutes: 60
    lower_source_cap: {{factor: 0.5}}
    webhook:
      url: {hook_url}
      auth: {{kind: bearer, secret_env: ALERT_HOOK_KEY}}
      max_attempts: 10
"""


@pytest.fixture
def alerted_flow(
    alert_settings: Settings, unique_id: str, receiver: WebhookReceiver
) -> Iterator[Flow]:
    flow = apply_flow(alert_settings, parse_flow(flow_text(unique_id, receiver.url))).flow
    yield flow
    delete_flow(alert_settings, flow.id)


def put_source_events(settings: Settings, flow: Flow, rejected: int, accepted: int) -> list[str]:
    """Leads decided by the source as its worker would record them; their ids."""
    who = StepIdentity(flow.id, flow.version, "source", "Web form", 0, "test", "test")
    producer = new_producer(settings)
    codec = default_codec()
    leads = []
    for n in range(rejected + accepted):
        now = int(time.time() * 1000)
        lead = new_lead_id(now)
        draft = (
            EventDraft("source.rejected", "failure", "Invalid email: jane.doe@example.com")
            if n < rejected
            else EventDraft("source.accepted", "success")
        )
        (event,) = stamp_events([draft], who, lead, now, {"lead.id": lead}, Timing(now, now, 0))
        producer.produce(events_topic(flow.id, "source"), codec.encode(event), lead.encode())
        leads.append(lead)
    assert producer.flush(30) == 0
    return leads
