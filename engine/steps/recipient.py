"""Delivery to a buyer: map the lead into the buyer's format, then judge its answer.

Split in two pure halves around the HTTP call the runtime makes:
``build_delivery`` (what to send) and ``judge_delivery`` (what the answer
means): ``recipient.delivered`` with revenue and the buyer's own id,
``recipient.failed`` for a business rejection with the buyer's reason,
``recipient.error`` for anything technical (timeout, 5xx, unreadable answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from pydantic import Field, HttpUrl

from engine.caps import CapSpec
from engine.model import ConfigModel
from engine.retries import RetrySettings
from engine.steps.base import (
    TOTAL_DELIVERED,
    TOTAL_REVENUE,
    EventDraft,
    Outcome,
    Snapshot,
    StepResult,
)

MAX_BODY = 16384


class AcceptRule(ConfigModel):
    path: str = "outcome"
    value: Any = "success"


class RecipientSettings(ConfigModel):
    url: HttpUrl
    format: Literal["json", "form"] = "json"
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000
    mapping: dict[str, str] = Field(default_factory=dict)
    accept: AcceptRule = AcceptRule()
    reason_path: str = "reason"
    price_path: str | None = "price"
    id_path: str | None = "id"
    caps: list[CapSpec] = Field(default_factory=list)
    retry: RetrySettings | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back from the buyer: a response, or the technical error instead."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None = None
    wait_ms: int = 0
    sent_at_ms: int = 0
    received_at_ms: int = 0


def build_delivery(snapshot: Snapshot, settings: RecipientSettings, event_id: str) -> Delivery:
    fields = {
        target: snapshot[source]
        for target, source in settings.mapping.items()
        if snapshot.get(source) is not None
    }
    # The event id doubles as an idempotency key: a delivery retried after a
    # crash carries the same key, so a buyer can recognise the duplicate.
    headers = {"Idempotency-Key": event_id, "Accept": "application/json"}
    if settings.format == "json":
        headers["Content-Type"] = "application/json"
        body = orjson.dumps(fields)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode({k: str(v) for k, v in fields.items()}).encode()
    return Delivery(str(settings.url), headers, body)


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _text(body: bytes) -> str:
    return body[:MAX_BODY].decode("utf-8", errors="replace")


def judge_delivery(
    snapshot: Snapshot,
    settings: RecipientSettings,
    step_id: str,
    delivery: Delivery,
    answer: Answer,
) -> StepResult:
    request = {
        "method": "POST",
        "uri": delivery.url,
        "headers": dict(delivery.headers),
        "body": _text(delivery.body),
        "timestamp": answer.sent_at_ms,
    }
    response = None
    if answer.status is not None:
        response = {
            "status": answer.status,
            "status_text": "",
            "headers": dict(answer.headers),
            "body": _text(answer.body),
            "timestamp": answer.received_at_ms,
        }

    def draft(type_: str, outcome: Outcome, reason: str | None, **kw: Any) -> EventDraft:
        return EventDraft(
            type_,
            outcome,
            reason,
            entity_id=step_id,
            request=request,
            response=response,
            wait_ms=answer.wait_ms,
            **kw,
        )

    if answer.error is not None:
        return StepResult([draft("recipient.error", "error", answer.error)], proceed=True)
    assert answer.status is not None
    if answer.status >= 500 or answer.status in (401, 403, 404, 408, 429):
        return StepResult(
            [draft("recipient.error", "error", f"Buyer answered HTTP {answer.status}")], True
        )
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return StepResult(
            [draft("recipient.error", "error", "Unreadable buyer response: not JSON")], True
        )

    if _dig(data, settings.accept.path) != settings.accept.value:
        reason = _dig(data, settings.reason_path)
        text = str(reason) if reason not in (None, "") else "Rejected by buyer"
        return StepResult([draft("recipient.failed", "failure", text, revenue=0.0)], proceed=True)

    price = _dig(data, settings.price_path) if settings.price_path else None
    revenue = (
        float(price) if isinstance(price, int | float) and not isinstance(price, bool) else 0.0
    )
    buyer_id = _dig(data, settings.id_path) if settings.id_path else None
    appended: Snapshot = {f"appended.{step_id}.price": revenue}
    if buyer_id is not None:
        appended[f"appended.{step_id}.id"] = str(buyer_id)
    totals: Snapshot = {
        TOTAL_REVENUE: float(snapshot.get(TOTAL_REVENUE) or 0.0) + revenue,
        TOTAL_DELIVERED: int(snapshot.get(TOTAL_DELIVERED) or 0) + 1,
    }
    delivered = draft(
        "recipient.delivered",
        "success",
        None,
        revenue=revenue,
        appended=appended,
        vars={**appended, **totals},
    )
    return StepResult([delivered], proceed=True)
