"""Around the source's judgement: whose lead an intake record is, and what a source that
POSTed it over HTTP is answered (recorded on ``source.submitted``)."""

from __future__ import annotations

import orjson
import pytest

from engine.ids import derived_lead_id, id_timestamp_ms
from engine.intake.config import IntakeAuth, IntakeSettings
from engine.intake.records import HttpIntake
from engine.steps.base import StepResult
from engine.steps.source import FieldSpec, SourceSettings, Submission, accept_submission
from engine.steps.submission import answer_source, lead_identity

LEAD_ID = "01KB0000000000000000000000"
PUBLISHED_MS = 1_764_000_000_000
RECEIVED_MS = PUBLISHED_MS + 25
ANSWERED_MS = RECEIVED_MS + 3
INTAKE = IntakeSettings(auth=IntakeAuth(key_env="SOLAR_KEY"))
SETTINGS = SourceSettings(
    fields=[FieldSpec(name="email", type="email", required=True)], cost=2.5, intake=INTAKE
)
WAITING = SETTINGS.model_copy(
    update={"intake": INTAKE.model_copy(update={"wait_for": "completion"})}
)
POSTED = HttpIntake({"method": "POST", "uri": "/flows/solar/leads", "headers": {}}, None, None)
PINGED = HttpIntake(POSTED.request, "PING-1", 4.5)


# --- whose lead ------------------------------------------------------------------------


def test_a_record_keyed_by_a_lead_id_is_that_lead_submitted_when_its_id_says() -> None:
    identity = lead_identity(LEAD_ID.encode(), PUBLISHED_MS, RECEIVED_MS, "intake", 0, 7)
    assert identity == (LEAD_ID, id_timestamp_ms(LEAD_ID))


@pytest.mark.parametrize("key", [None, b"", b"crm-4711", b"01kb0000000000000000000000"])
def test_any_other_record_is_a_lead_named_by_its_place_in_the_intake_topic(
    key: bytes | None,
) -> None:
    lead_id, submitted_ms = lead_identity(key, PUBLISHED_MS, RECEIVED_MS, "intake", 2, 7)
    assert lead_id == derived_lead_id(PUBLISHED_MS, "intake", 2, 7)
    assert submitted_ms == PUBLISHED_MS


def test_a_replayed_record_is_the_same_lead_and_another_record_another() -> None:
    first = lead_identity(None, PUBLISHED_MS, RECEIVED_MS, "intake", 2, 7)
    assert lead_identity(None, PUBLISHED_MS, RECEIVED_MS + 9_000, "intake", 2, 7) == first
    assert lead_identity(None, PUBLISHED_MS, RECEIVED_MS, "intake", 2, 8)[0] != first[0]


@pytest.mark.parametrize("published", [0, -1])
def test_a_record_without_a_time_is_submitted_when_it_was_received(published: int) -> None:
    lead_id, submitted_ms = lead_identity(None, published, RECEIVED_MS, "intake", 2, 7)
    assert (lead_id, submitted_ms) == (derived_lead_id(RECEIVED_MS, "intake", 2, 7), RECEIVED_MS)


# --- what the source is answered ------------------------------------------------------------


def posted(body: bytes, settings: SourceSettings = SETTINGS) -> tuple[Submission, StepResult]:
    sub = Submission(body, LEAD_ID, PUBLISHED_MS, "solar", "Solar", "web", "Web form")
    return sub, accept_submission(sub, settings)


def answered(result: StepResult) -> tuple[int, dict[str, object]]:
    response = result.events[0].response
    assert response is not None and response["timestamp"] == ANSWERED_MS
    return response["status"], orjson.loads(response["body"])


def test_an_accepted_lead_is_answered_201_with_its_price() -> None:
    sub, result = posted(b'{"email": "ada@example.com"}')
    status, body = answered(answer_source(result, sub, POSTED, SETTINGS, ANSWERED_MS))
    assert status == 201
    assert body == {"outcome": "success", "reason": None, "lead": {"id": LEAD_ID}, "price": 2.5}


def test_a_rejected_lead_is_answered_with_the_reason_and_no_price() -> None:
    sub, result = posted(b'{"email": "not an email"}')
    status, body = answered(answer_source(result, sub, POSTED, SETTINGS, ANSWERED_MS))
    assert status == 201
    assert (body["outcome"], body["price"]) == ("failure", 0.0)
    assert body["reason"] == result.last.reason


def test_a_body_that_cannot_be_read_is_a_400_in_the_same_shape() -> None:
    sub, result = posted(b"<<<")
    status, body = answered(answer_source(result, sub, POSTED, SETTINGS, ANSWERED_MS))
    assert status == 400
    assert (body["outcome"], body["lead"]) == ("failure", {"id": LEAD_ID})


def test_a_source_waiting_for_completion_is_answered_by_flow_completed_not_here() -> None:
    sub, result = posted(b'{"email": "ada@example.com"}', WAITING)
    kept = answer_source(result, sub, POSTED, WAITING, ANSWERED_MS)
    assert kept.events[0].response is None
    assert [e.type for e in kept.events] == ["source.submitted", "source.accepted"]


def test_a_waiting_source_is_still_answered_a_rejection_at_once() -> None:
    sub, result = posted(b"{}", WAITING)
    status, _ = answered(answer_source(result, sub, POSTED, WAITING, ANSWERED_MS))
    assert status == 201


def test_a_posted_lead_that_answers_a_ping_carries_the_ping_on_every_event() -> None:
    sub, result = posted(b'{"email": "ada@example.com"}')
    pinged = answer_source(result, sub, PINGED, SETTINGS, ANSWERED_MS)
    assert [e.vars["ping.id"] for e in pinged.events] == ["PING-1", "PING-1"]
    assert pinged.proceed
    unpinged = answer_source(result, sub, POSTED, SETTINGS, ANSWERED_MS)
    assert all("ping.id" not in e.vars for e in unpinged.events)
