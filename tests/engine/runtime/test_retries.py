"""Retries through the retry topic: errors are retried with backoff, then the lead goes on."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import Consumer

from engine.flows import Flow, parse_flow
from engine.ops.submit import publish_leads
from engine.runtime.kafka.config import consumer_config
from engine.runtime.step_worker import build_step_loop, prepare_topics
from engine.settings import Settings
from engine.topics import dlq_topic
from tests.factories import DEMO_FLOW
from tests.kafka_helpers import events_by_lead, read_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

LEAD = {
    "first_name": "A",
    "last_name": "B",
    "phone_1": "5125550123",
    "state": "TX",
    "tcpa_consent": True,
}


class FlakyBuyer(ThreadingHTTPServer):
    """Fails the first ``failures`` calls per idempotency key with HTTP 503, then accepts.
    ``failures`` comes from the lead's email: ``fail2@...`` fails twice, ``fail9`` always."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/leads"


class _Handler(BaseHTTPRequestHandler):
    server: FlakyBuyer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers["Idempotency-Key"]
        with self.server.lock:
            self.server.calls[key] += 1
            calls = self.server.calls[key]
        failures = int(body["email"][4])
        status, answer = (
            (503, {}) if calls <= failures else (200, {"outcome": "success", "price": 9})
        )
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def buyer() -> Iterator[FlakyBuyer]:
    server = FlakyBuyer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def retrying_flow(flow_id: str, url: str) -> Flow:
    text = DEMO_FLOW.read_text().replace("id: demo\n", f"id: {flow_id}\n", 1)
    text = text.replace("url: http://127.0.0.1:8765/leads", f"url: {url}")
    text = text.replace(
        "      timeout_ms: 5000\n",
        "      timeout_ms: 5000\n"
        "      retry: {attempts: 3, initial_backoff_ms: 400, max_backoff_ms: 800}\n",
    )
    return parse_flow(text)


def test_errors_are_retried_until_success_or_exhaustion(
    stack: Settings, unique_id: str, buyer: FlakyBuyer
) -> None:
    flow = retrying_flow(unique_id, buyer.url)
    prepare_topics(stack, flow)
    stop = threading.Event()
    threads = []
    for step in flow.steps:
        loop = build_step_loop(stack, flow, step.id)
        threads.append(threading.Thread(target=loop.run, args=(stop,), daemon=True))
        threads[-1].start()
    try:
        healthy, flaky, hopeless = publish_leads(
            stack,
            flow.id,
            [{**LEAD, "email": f"fail{n}@example.com"} for n in (0, 2, 9)],
        )
        events = wait_until(
            lambda: read_events(stack, flow, 5),
            60,
            "the 3 leads to complete",
            until=lambda events: sum(e["type"] == "flow.completed" for e in events) == 3,
            every=0.5,
            show=lambda events: [e["type"] for e in events if e["type"] == "flow.completed"],
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    timelines = events_by_lead(events)
    head = ["source.submitted", "source.accepted", "filter.passed"]
    assert [e["type"] for e in timelines[healthy]] == [
        *head,
        "recipient.delivered",
        "flow.completed",
    ]
    retry = ["recipient.error", "retry.scheduled", "retry.attempted"]
    assert [e["type"] for e in timelines[flaky]] == [
        *head,
        *retry,
        *retry,
        "recipient.delivered",
        "flow.completed",
    ]
    assert [e["type"] for e in timelines[hopeless]] == [
        *head,
        *retry,
        *retry,
        "recipient.error",
        "flow.completed",
    ]
    flaky_events = timelines[flaky]
    assert [e["attempt"] for e in flaky_events[3:10]] == [1, 1, 2, 2, 2, 3, 3]
    assert flaky_events[4]["reason"] == ("Attempt 2 of 3 in 400ms after: Buyer answered HTTP 503")
    assert flaky_events[4]["retry_status"] == "started"
    assert flaky_events[8]["retry_status"] == "completed"
    # Each retry names the failure it answers, through the retry topic to the next attempt.
    assert [e["original_failure"] for e in flaky_events[3:10]] == [
        None, "Buyer answered HTTP 503", "Buyer answered HTTP 503", None,
        "Buyer answered HTTP 503", "Buyer answered HTTP 503", None,
    ]  # fmt: skip
    # Backoff came from the retry topic, not from a sleep: the second attempt ran >= 400 ms later.
    assert flaky_events[5]["start_timestamp"] - flaky_events[3]["end_timestamp"] >= 400
    assert timelines[hopeless][-1]["outcome"] == "error"
    # The same idempotency key on every attempt, so a buyer can de-duplicate.
    assert sorted(buyer.calls.values()) == [1, 3, 3]

    consumer = Consumer(consumer_config(stack, f"{unique_id}-dlq"))
    consumer.subscribe([dlq_topic(flow.id)])
    dead: list[Any] = wait_until(
        lambda: [m for m in consumer.consume(10, timeout=1) if not m.error()],
        15,
        "the dead letter",
        every=0,
    )
    consumer.close()
    assert len(dead) == 1
    assert dict(dead[0].headers())["leadflow-error"] == (
        b"Retries exhausted after 3 attempts: Buyer answered HTTP 503"
    )
    assert dead[0].key() == hopeless.encode()
