"""Alerts from events on real Kafka: a bad source triggers, is lowered, and resolves.

Events go on the flow's source topic as the source step writes them; the evaluator (as
the ``alerts:<flow>`` role runs it, following the registry) must put ``alert.triggered``
then ``alert.resolved`` in the system event outbox, POST both to the webhook (with its
secret, the top reasons and example leads, masked), and record the source's cap halved
as a new version of the flow.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from structlog.testing import capture_logs

from engine.flows import Flow, SourceStep
from engine.runtime.alerting.evaluator import run_alerts
from engine.runtime.kafka.clients import new_consumer
from engine.runtime.registry import FLOWS_TOPIC, FlowRegistry, read_flows
from engine.settings import Settings
from engine.state.postgres import connect
from tests.engine.runtime.alerting.conftest import HOOK_SECRET, WebhookReceiver, put_source_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def outbox(settings: Settings) -> list[tuple[str, str, str, dict[str, Any]]]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT type, subject, reason, data FROM system_event_outbox"
            " WHERE type LIKE 'alert.%' ORDER BY occurred_at, id"
        ).fetchall()
    return [(str(t), str(s), str(r), dict(d)) for t, s, r, d in rows]


def actions(settings: Settings) -> list[tuple[str, str, int, str | None]]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT kind, status, attempts, last_error FROM engine_alert_actions"
            " ORDER BY created_at, id"
        ).fetchall()
    return [(str(k), str(s), int(a), e) for k, s, a, e in rows]


def source_caps(settings: Settings, flow_id: str) -> tuple[int, list[int]]:
    flow = next(f for f in read_flows(settings) if f.id == flow_id)
    step = flow.steps[0]
    assert isinstance(step, SourceStep)
    return flow.version, [c.maximum for c in step.settings.caps]


def flow_updates(settings: Settings, flow_id: str) -> list[dict[str, Any]]:
    consumer = new_consumer(settings, "unused-reader", **{"enable.partition.eof": True})
    consumer.assign([TopicPartition(FLOWS_TOPIC, 0, OFFSET_BEGINNING)])
    found = []
    while True:
        msg = consumer.poll(10)
        if msg is None or msg.error():
            break
        if msg.key() == flow_id.encode() and msg.value():
            found.append(orjson.loads(msg.value() or b"{}"))
    consumer.close()
    return found


@pytest.fixture
def evaluator(alert_settings: Settings, alerted_flow: Flow) -> Iterator[threading.Event]:
    stop = threading.Event()
    registry = FlowRegistry(alert_settings)
    registry.refresh()
    thread = threading.Thread(
        target=run_alerts,
        args=(alert_settings, alerted_flow, stop),
        kwargs={"tick_s": 0.2, "registry": registry},
        daemon=True,
    )
    thread.start()
    yield stop
    stop.set()
    thread.join(30)
    registry.close()
    assert not thread.is_alive()


def test_a_bad_source_triggers_lowers_its_cap_and_resolves(
    alert_settings: Settings,
    alerted_flow: Flow,
    receiver: WebhookReceiver,
    evaluator: threading.Event,
) -> None:
    with capture_logs() as logs:
        bad = put_source_events(alert_settings, alerted_flow, rejected=8, accepted=2)
        wait_until(lambda: receiver.bodies("alert.triggered"), 60, "the triggered webhook")
        (triggered,) = [row for row in outbox(alert_settings) if row[0] == "alert.triggered"]
        _, subject, reason, data = triggered
        alert_id = data["id"]
        assert subject == f"flows/{alerted_flow.id}/alerts/{alert_id}"
        # Judged after whichever batch first crossed the threshold.
        assert re.fullmatch(r"source_rejection_rate \d+\.\d % > 50 % over 60 min", reason)
        assert data["value"] > 50 and data["subject"] == "source" and data["status"] == "firing"
        (top,) = data["top_reasons"]
        assert top["reason"] == "Invalid email: j***@example.com" and top["share"] == 1.0
        assert 3 <= top["count"] <= 8  # over half of at least min_events (5)
        assert 1 <= len(data["example_lead_ids"]) <= 5
        assert set(data["example_lead_ids"]) <= set(bad[:8])

        (hook,) = receiver.bodies("alert.triggered")
        assert hook == data
        request = receiver.received[0]
        assert request["headers"]["Authorization"] == f"Bearer {HOOK_SECRET}"
        assert request["headers"]["Idempotency-Key"].startswith(alert_id)

        # The automated response: the source's daily cap halved, as a new flow version.
        wait_until(
            lambda: source_caps(alert_settings, alerted_flow.id),
            60,
            "the source's cap lowered",
            until=lambda v: v[1] == [50],
        )
        update = flow_updates(alert_settings, alerted_flow.id)[-1]
        assert update["type"] == "flow.updated"
        assert update["reason"].startswith(f"alert bad-source ({alert_id}): ")

        # Healthy again: 8 of 30 rejected (27 %) is under the resolve threshold of 30 %.
        put_source_events(alert_settings, alerted_flow, rejected=0, accepted=20)
        wait_until(lambda: receiver.bodies("alert.resolved"), 60, "the resolved webhook")
        kinds = [row[0] for row in outbox(alert_settings)]
        assert kinds == ["alert.triggered", "alert.resolved"]
        resolved = outbox(alert_settings)[1]
        assert resolved[1] == subject  # one alert, triggered then resolved
        assert resolved[3]["value"] <= 30
        wait_until(
            lambda: actions(alert_settings),
            30,
            "every action done",
            until=lambda rows: all(r[1] == "done" for r in rows),
        )
        assert sorted(r[0] for r in actions(alert_settings)) == [
            "lower_source_cap",
            "webhook",
            "webhook",
        ]
    assert HOOK_SECRET not in repr(logs)


@pytest.mark.parametrize("receiver", [3], indirect=True)  # its first three answers: 500
def test_a_failing_webhook_is_retried_and_never_holds_up_evaluation(
    alert_settings: Settings,
    alerted_flow: Flow,
    receiver: WebhookReceiver,
    evaluator: threading.Event,
) -> None:
    with capture_logs() as logs:
        put_source_events(alert_settings, alerted_flow, rejected=8, accepted=2)
        wait_until(
            lambda: [r for r in outbox(alert_settings) if r[0] == "alert.triggered"],
            60,
            "the trigger",
        )
        put_source_events(alert_settings, alerted_flow, rejected=0, accepted=20)
        # The evaluation went on while the webhook kept failing: resolved in the outbox.
        wait_until(
            lambda: [r for r in outbox(alert_settings) if r[0] == "alert.resolved"],
            60,
            "the resolution",
        )
        wait_until(lambda: receiver.bodies("alert.resolved"), 60, "both webhooks delivered")
    # The trigger's three failures, its success, then (only then) the resolution.
    calls = zip(receiver.received, receiver.answered, strict=True)
    assert [(r["body"]["type"], status) for r, status in calls] == [
        ("alert.triggered", 500),
        ("alert.triggered", 500),
        ("alert.triggered", 500),
        ("alert.triggered", 200),
        ("alert.resolved", 200),
    ]
    webhooks = [r for r in actions(alert_settings) if r[0] == "webhook"]
    assert webhooks[0][2] == 4 and webhooks[0][1] == "done"  # three failures, then done
    assert HOOK_SECRET not in repr(logs) + repr(actions(alert_settings))
    retried = [e for e in logs if e["event"] == "alert action failed, retried"]
    assert len(retried) == 3 and retried[0]["error"].endswith("answered 500")
