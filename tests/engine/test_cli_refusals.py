"""Commands that used to succeed when they should not: each now refuses, with the reason.

``flow delete`` of an unknown flow, ``run`` of roles no applied flow has (which ran
nothing, silently and forever), ``offsets`` of groups that do not exist (an empty
table, exit 0), and ``feedback`` the worker would reject (published, "exit 0", then
silently to ``leadflow.feedback.rejected``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from confluent_kafka import Message
from typer.testing import CliRunner, Result

from engine import cli
from engine.ops.feedback_check import FeedbackRefusedError
from engine.ops.offsets import UnknownGroupError
from engine.runtime.handlers.feedback import FEEDBACK_REJECTED_TOPIC, FeedbackHandler
from engine.runtime.registry import UnknownFlowError, apply_flow, delete_flow
from engine.runtime.schema_registry import TopicCodecs
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.deliveries import TimelineDeliveries
from projectors.generations import migrate_database
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_flow, make_lead_events

pytestmark = pytest.mark.stack


def leadflow(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` must refuse before starting anything; reaching a worker is the bug."""

    def started(*_: Any, **__: Any) -> None:
        raise AssertionError("run started workers for roles no applied flow has")

    monkeypatch.setattr(cli, "supervise", started)
    monkeypatch.setattr(cli, "install_stop_handlers", lambda _: None)


@pytest.fixture
def applied(stack: Settings, unique_id: str) -> Iterator[str]:
    apply_flow(stack, make_flow(unique_id, "http://127.0.0.1:9/leads"))
    yield unique_id
    delete_flow(stack, unique_id)


def test_flow_delete_of_an_unknown_flow_is_refused(stack: Settings, unique_id: str) -> None:
    result = leadflow("flow", "delete", f"{unique_id}-nosuch")
    assert result.exit_code != 0
    assert isinstance(result.exception, UnknownFlowError)
    assert str(result.exception) == (
        f"no applied flow {unique_id}-nosuch (leadflow flow list shows them)"
    )


@pytest.mark.usefixtures("nothing_runs")
def test_run_refuses_registry_roles_that_no_applied_flow_has(applied: str) -> None:
    result = leadflow(
        "run", f"{applied}:source", f"{applied}:nosuch", f"{applied}-gone:source",
        f"streamer:{applied}-gone", "projectr",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())  # rich boxes and wraps the usage error
    assert f"{applied}:nosuch: flow {applied} has no step nosuch" in message
    assert "(its steps: source, service-area, premier)" in message
    assert f"{applied}-gone:source: no applied flow {applied}-gone" in message
    assert f"streamer:{applied}-gone: no applied flow {applied}-gone" in message
    assert "projectr: no such role" in message
    assert f"{applied}:source:" not in message  # a role the flow has is fine


def test_offsets_of_groups_that_do_not_exist_are_refused(stack: Settings, unique_id: str) -> None:
    listing = leadflow("offsets", "--group-prefix", f"leadflow.{unique_id}.")
    assert isinstance(listing.exception, UnknownGroupError)
    assert str(listing.exception) == f"no consumer group matches the prefix 'leadflow.{unique_id}.'"

    reset = leadflow("offsets", "reset", f"leadflow.{unique_id}.step.x", "--to-earliest")
    assert isinstance(reset.exception, UnknownGroupError)
    assert str(reset.exception).startswith(f"no consumer group matches leadflow.{unique_id}.step.x")


@pytest.fixture
def projected(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One delivered lead in a timeline projection of the test's own; the CLI pointed at it
    and its publishing recorded, not sent. Returns event id by type."""
    settings = stack.model_copy(update={"db_schema": unique_id})
    migrate_database(settings)
    events = make_lead_events(flow_id=unique_id)
    codec = EventCodec()
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(events)]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, records))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "publish_feedback", lambda _, body, key=None: published.append(body))
    return {str(e["type"]): str(e["id"]) for e in events}


published: list[bytes] = []


@pytest.fixture(autouse=True)
def _no_publishing() -> Iterator[None]:
    published.clear()
    yield
    published.clear()


def test_feedback_of_an_unknown_type_is_refused_before_publishing(
    projected: dict[str, str],
) -> None:
    result = leadflow("feedback", projected["recipient.delivered"], "--type", "refund")
    assert result.exit_code == 2
    assert "'refund' is not one of 'conversion', 'return'" in " ".join(result.stderr.split())
    assert published == []


def test_feedback_on_an_unknown_event_or_a_non_delivery_is_refused_before_publishing(
    projected: dict[str, str],
) -> None:
    unknown = leadflow("feedback", "01JB0000000000000000000000", "--type", "return")
    assert isinstance(unknown.exception, FeedbackRefusedError)
    assert str(unknown.exception).startswith("Unknown event: 01JB0000000000000000000000 (")

    accepted = projected["source.accepted"]
    not_delivery = leadflow("feedback", accepted, "--type", "conversion")
    assert isinstance(not_delivery.exception, FeedbackRefusedError)
    assert str(not_delivery.exception).startswith(f"Event {accepted} is not a delivery to a buyer")
    assert published == []


def test_feedback_on_a_delivery_is_published_and_no_check_publishes_any(
    projected: dict[str, str],
) -> None:
    delivery = projected["recipient.delivered"]
    assert leadflow("feedback", delivery, "--type", "return").exit_code == 0
    unchecked = leadflow("feedback", "01JB0000000000000000000000", "--type", "return", "--no-check")
    assert unchecked.exit_code == 0
    assert [b'"event_id":"' + e.encode() in body for e, body in zip(
        (delivery, "01JB0000000000000000000000"), published, strict=True
    )] == [True, True]  # fmt: skip


def test_the_feedback_worker_logs_every_feedback_it_rejects_with_the_reason(
    stack: Settings,
) -> None:
    handler = FeedbackHandler(stack, TopicCodecs(stack), TimelineDeliveries(stack))
    message = Message(topic="leadflow.feedback", partition=1, offset=42, value=b'{"type": "x"}')
    try:
        with structlog.testing.capture_logs() as logs:
            [record] = handler.handle(message)
    finally:
        handler.close()
    assert record.topic == FEEDBACK_REJECTED_TOPIC
    [logged] = [entry for entry in logs if entry["event"] == "feedback rejected"]
    assert logged["log_level"] == "warning"
    assert logged["reason"].startswith("Invalid feedback: event_id: Field required")
    assert (logged["topic"], logged["partition"], logged["offset"]) == ("leadflow.feedback", 1, 42)
