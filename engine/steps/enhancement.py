"""Enhancements: call a validation/append service and keep what it returns under ``appended.<key>``.

Split, like a recipient, in two pure halves around the HTTP call the runtime
makes: ``build_request`` (what to send) and ``judge_enhancement`` (what the
answer means). It records ``enhancement.success`` (the answer appended, so
later filters and mappings can use e.g. ``appended.phone_check.carrier``),
``enhancement.failure`` (the service answered that it could not help, e.g.
phone not found) or ``enhancement.error`` (timeout, 5xx, unreadable answer).
Neither of the last two stops the lead unless the step is marked ``required``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from pydantic import Field, HttpUrl

from engine.fields import Scalar
from engine.model import ConfigModel
from engine.retries import RetrySettings
from engine.steps.base import EventDraft, Outcome, Snapshot, StepResult
from engine.steps.recipient import MAX_BODY, AcceptRule, Answer, Delivery

# The appended answer travels in the snapshot of every later event of the lead,
# so one verbose service must not make them all huge: long values are cut,
# deep structures kept as JSON text, and only the first fields are kept.
MAX_VALUE = 4096
MAX_DEPTH = 8
MAX_FIELDS = 256
_LONG = range(-(2**63), 2**63)  # Avro ``long``: larger integers are kept as text

NO_DATA = "Service found no data"
# Technical answers: the service is down, refuses us or throttles us - not "no data".
ERROR_STATUSES = frozenset({401, 403, 404, 408, 429})


class EnhancementSettings(ConfigModel):
    url: HttpUrl
    key: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    format: Literal["json", "form"] = "json"
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000
    # Request field -> snapshot key, e.g. ``phone: lead.phone_1``.
    mapping: dict[str, str] = Field(default_factory=dict)
    # The answer is a success when the value at ``path`` equals ``value``.
    success: AcceptRule = AcceptRule()
    reason_path: str = "reason"
    # A required enhancement that fails or errs stops the lead (flow.completed).
    required: bool = False
    retry: RetrySettings | None = None


def _form_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_request(snapshot: Snapshot, settings: EnhancementSettings, event_id: str) -> Delivery:
    """The service call for one lead: mapped fields as JSON or a form, keyed by the event id."""
    fields = {
        target: snapshot[source]
        for target, source in settings.mapping.items()
        if snapshot.get(source) is not None
    }
    # Retries of this step carry the same key, so a paid lookup is not paid twice.
    headers = {"Idempotency-Key": event_id, "Accept": "application/json"}
    if settings.format == "json":
        headers["Content-Type"] = "application/json"
        body = orjson.dumps(fields)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode({k: _form_value(v) for k, v in fields.items()}).encode()
    return Delivery(str(settings.url), headers, body)


def _scalar(value: Any) -> Scalar:
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, int) and not isinstance(value, bool) and value not in _LONG:
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return orjson.dumps(value).decode()[:MAX_VALUE]  # lists, and dicts nested too deep


def flatten_answer(data: dict[str, Any], prefix: str) -> Snapshot:
    """A JSON object as flat dotted keys under ``prefix``: nested objects become
    ``prefix.a.b``, lists are kept as JSON text, so the snapshot stays flat."""
    out: Snapshot = {}

    def walk(node: dict[str, Any], path: str, depth: int) -> None:
        for name, value in node.items():
            if len(out) >= MAX_FIELDS:
                return
            key = f"{path}.{name}"
            if isinstance(value, dict) and depth < MAX_DEPTH:
                walk(value, key, depth + 1)
            else:
                out[key] = _scalar(value)

    walk(data, prefix, 1)
    return out


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _text(body: bytes) -> str:
    return body[:MAX_BODY].decode("utf-8", errors="replace")


def _transaction(request: Delivery, answer: Answer) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The request and response as events record them (LeadConduit's ``transactions``)."""
    sent = {
        "method": "POST",
        "uri": request.url,
        "headers": dict(request.headers),
        "body": _text(request.body),
        "timestamp": answer.sent_at_ms,
    }
    if answer.status is None:
        return sent, None
    received = {
        "status": answer.status,
        "status_text": "",
        "headers": dict(answer.headers),
        "body": _text(answer.body),
        "timestamp": answer.received_at_ms,
    }
    return sent, received


def _problem(answer: Answer) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as a JSON object, or why it is a technical error instead."""
    if answer.error is not None:
        return None, answer.error
    assert answer.status is not None
    if answer.status >= 500 or answer.status in ERROR_STATUSES:
        return None, f"Service answered HTTP {answer.status}"
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None, "Unreadable service response: not JSON"
    if not isinstance(data, dict):
        return None, "Unreadable service response: not a JSON object"
    return data, None


def judge_enhancement(
    snapshot: Snapshot,
    settings: EnhancementSettings,
    step_id: str,
    request: Delivery,
    answer: Answer,
) -> StepResult:
    """What the service's answer means for the lead; ``snapshot`` is the lead before the call."""
    sent, received = _transaction(request, answer)
    proceed_unless_required = not settings.required

    def draft(type_: str, outcome: Outcome, reason: str | None, **kw: Any) -> EventDraft:
        return EventDraft(
            type_,
            outcome,
            reason,
            entity_id=step_id,
            request=sent,
            response=received,
            wait_ms=answer.wait_ms,
            key=settings.key,
            **kw,
        )

    data, error = _problem(answer)
    if data is None:
        failed = draft("enhancement.error", "error", error)
        return StepResult([failed], proceed=proceed_unless_required)

    if _dig(data, settings.success.path) != settings.success.value:
        reason = _dig(data, settings.reason_path)
        text = str(reason)[:MAX_VALUE] if reason not in (None, "") else NO_DATA
        return StepResult(
            [draft("enhancement.failure", "failure", text)], proceed=proceed_unless_required
        )

    appended = flatten_answer(data, f"appended.{settings.key}")
    success = draft("enhancement.success", "success", None, appended=appended, vars=dict(appended))
    return StepResult([success], proceed=True)
