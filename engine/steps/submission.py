"""What the source step makes of an intake record around its judgement: whose lead it is,
and the answer a source that POSTed it over HTTP is given.

Pure: the runtime reads the record (key, timestamp, position, headers) and the
clock, and hands the values in.
"""

from __future__ import annotations

from dataclasses import replace

import orjson

from engine.ids import derived_lead_id, id_timestamp_ms, is_valid_id
from engine.intake.answers import lead_answer, recorded_response
from engine.intake.bodies import decode_body
from engine.intake.records import HttpIntake
from engine.steps.base import StepResult
from engine.steps.source import SourceSettings, Submission


def lead_identity(
    key: bytes | None,
    published_ms: int,
    received_ms: int,
    topic: str | None,
    partition: int | None,
    offset: int | None,
) -> tuple[str, int]:
    """The lead's id and submission time.

    A record keyed by a lead id (the HTTP intake's, or a producer's own) is that
    lead, submitted when its id says. Any other gets an id derived from its place
    in the intake topic, so a replayed record never becomes a second lead, and is
    submitted when it was published (when it was received, for a record without a time).
    """
    text = (key or b"").decode("ascii", errors="replace")
    if is_valid_id(text):
        return text, id_timestamp_ms(text)
    submitted_ms = published_ms if published_ms > 0 else received_ms
    return derived_lead_id(submitted_ms, topic, partition, offset), submitted_ms


def answer_source(
    result: StepResult,
    sub: Submission,
    http: HttpIntake,
    settings: SourceSettings,
    answered_ms: int,
) -> StepResult:
    """``result`` for a lead POSTed over HTTP: every event carries the ping it answers, and
    ``source.submitted`` records the answer the endpoint gives, when this step decides it:
    always for a rejection (a 400 for a body that could not be read), for an acceptance
    unless the source waits for ``flow.completed`` (whose outcome is then the answer)."""
    drafts = list(result.events)
    if http.ping_id is not None:
        drafts = [replace(d, vars={**d.vars, "ping.id": http.ping_id}) for d in drafts]
    submitted, verdict = drafts[0], drafts[-1]
    accepted = verdict.type == "source.accepted"
    waits = settings.intake is not None and settings.intake.wait_for == "completion"
    if not (accepted and waits):
        malformed = not result.proceed and not isinstance(
            decode_body(sub.body, sub.content_type), dict
        )
        price = verdict.cost if accepted else 0.0
        answer = lead_answer(sub.lead_id, verdict.outcome, verdict.reason, price, malformed)
        response = recorded_response(answer, answered_ms, orjson.dumps(answer.body))
        drafts[0] = replace(submitted, response=response)
    return StepResult(drafts, result.proceed)
