"""Enhancements: call a validation/append service and keep what it returns under ``appended.<key>``.

Split, like a recipient, in two pure halves around the HTTP call the runtime
makes: ``plan_enhancement`` (the call to make) and ``judge_enhancement`` (what
the answer means). It records ``enhancement.success`` (the answer appended, so
later filters and mappings can use e.g. ``appended.phone_check.carrier``),
``enhancement.failure`` (the service answered that it could not help, e.g.
phone not found) or ``enhancement.error`` (timeout, 5xx, unreadable answer).
Neither of the last two stops the lead unless the step is marked ``required``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, Field, HttpUrl

from engine.fields import Scalar
from engine.model import ConfigModel
from engine.retries import RetrySettings
from engine.steps.base import TOTAL_COST, EventDraft, Outcome, Snapshot, StepResult
from engine.steps.calls import (
    DEFAULT_IDEMPOTENCY_HEADER,
    HEADER_NAME,
    Answer,
    Call,
    CallAuth,
    Delivery,
    bounded,
    build_call,
    dig,
    no_credentials_in_url,
    read_answer,
    transaction,
)
from engine.steps.recipient import AcceptRule, delivery_key

# The appended answer travels in the snapshot of every later event of the lead,
# so one verbose service must not make them all huge: long values are cut,
# deep structures kept as JSON text, and only the first fields are kept.
MAX_VALUE = 4096
MAX_DEPTH = 8
MAX_FIELDS = 256
_LONG = range(-(2**63), 2**63)  # Avro ``long``: larger integers are kept as text

NO_DATA = "Service found no data"
# Technical answers: the service is down, refuses us or throttles us - not "no data".


class EnhancementSettings(ConfigModel):
    url: Annotated[HttpUrl, AfterValidator(no_credentials_in_url)]
    # Credentials the service wants, by reference (engine.steps.calls.CallAuth).
    auth: CallAuth | None = None
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
    # What one answered call costs (a paid lookup): recorded as the event's cost and added
    # to the lead's cost, on success and failure alike (the service answered); an error
    # (no answer) costs nothing.
    cost: Annotated[float, Field(ge=0)] = 0.0
    # The most calls in flight to this service at once (its own limit); None: no limit.
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] | None = None
    # The header that carries the call's idempotency key, as the service wants it.
    idempotency_header: Annotated[str, Field(pattern=HEADER_NAME)] = DEFAULT_IDEMPOTENCY_HEADER


def build_request(snapshot: Snapshot, settings: EnhancementSettings, key: str) -> Delivery:
    """The service call for one lead; retries carry the same key, so a paid lookup is paid once."""
    return build_call(
        snapshot, str(settings.url), settings.mapping, settings.format, key,
        settings.idempotency_header,
    )  # fmt: skip


def plan_enhancement(
    lead_id: str, snapshot: Snapshot, settings: EnhancementSettings, step_index: int
) -> Call:
    """The call for one lead at the step at ``step_index``, keyed as a recipient's delivery
    is (``delivery_key``): the same key on every retry and replay."""
    request = build_request(snapshot, settings, delivery_key(lead_id, snapshot, step_index))
    # "Service timeout after 5000ms", as LeadConduit words it.
    return Call(request, settings.timeout_ms, "Service", settings.max_concurrency, settings.auth)


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


def judge_enhancement(
    snapshot: Snapshot,
    settings: EnhancementSettings,
    step_id: str,
    request: Delivery,
    answer: Answer,
) -> StepResult:
    """What the service's answer means for the lead; ``snapshot`` is the lead before the call."""
    sent, received = transaction(request, answer)
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

    data, error = read_answer(answer, "Service")
    if data is None:
        failed = draft(
            "enhancement.error",
            "error",
            error,
            circuit_breaker_state=answer.breaker_state,
            timeout_ms=settings.timeout_ms,
            timed_out=answer.timed_out,
            cost=0.0,
        )
        return StepResult([failed], proceed=proceed_unless_required)

    charged = _charged(snapshot, settings.cost)
    if dig(data, settings.success.path) != settings.success.value:
        reason = dig(data, settings.reason_path)
        text = bounded(reason) if reason not in (None, "") else NO_DATA
        failure = draft("enhancement.failure", "failure", text, cost=settings.cost, vars=charged)
        return StepResult([failure], proceed=proceed_unless_required)

    appended = flatten_answer(data, f"appended.{settings.key}")
    success = draft(
        "enhancement.success",
        "success",
        None,
        appended=appended,
        vars={**appended, **charged},
        cost=settings.cost,
    )
    return StepResult([success], proceed=True)


def _charged(snapshot: Snapshot, cost: float) -> Snapshot:
    """The lead's running cost with this lookup's (nothing when the lookup is free, so a
    free enhancement leaves the snapshot, and its encoded bytes, as they were)."""
    if not cost:
        return {}
    return {TOTAL_COST: float(snapshot.get(TOTAL_COST) or 0.0) + cost}
