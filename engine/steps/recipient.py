"""Delivery to a buyer: map the lead into the buyer's format, then judge its answer.

Split in two pure halves around the HTTP call the runtime makes:
``plan_delivery`` (the call to make, or none at a full cap) and
``judge_delivery`` (what the answer means): ``recipient.delivered`` with
revenue and the buyer's own id, ``recipient.failed`` for a business
rejection with the buyer's reason, ``recipient.error`` for anything
technical (timeout, 5xx, unreadable answer).

With caps, the runtime reserves the lead a slot in each of the recipient's caps
before the call. At a full cap the buyer is not called at all (``cap_full``:
``recipient.failed`` with ``cap_reached``, and the lead goes on); otherwise only
a delivered lead keeps its slot (``within_caps``), any other answer gives it back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, HttpUrl

from engine.caps import CapSpec
from engine.ids import event_id, id_timestamp_ms
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
from engine.steps.calls import (
    DEFAULT_IDEMPOTENCY_HEADER,
    HEADER_NAME,
    MAX_ID,
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
from engine.steps.cap_checks import (
    CapCheck,
    CapCount,
    cap_checks,
    recipient_cap_reason,
    recipient_scope,
)


class AcceptRule(ConfigModel):
    path: str = "outcome"
    value: Any = "success"


class RecipientSettings(ConfigModel):
    url: Annotated[HttpUrl, AfterValidator(no_credentials_in_url)]
    # Credentials the service wants, by reference (engine.steps.calls.CallAuth).
    auth: CallAuth | None = None
    format: Literal["json", "form"] = "json"
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000
    mapping: dict[str, str] = Field(default_factory=dict)
    accept: AcceptRule = AcceptRule()
    reason_path: str = "reason"
    price_path: str | None = "price"
    id_path: str | None = "id"
    caps: list[CapSpec] = Field(default_factory=list)
    retry: RetrySettings | None = None
    # The most deliveries in flight to this buyer at once (its own limit); None: no limit.
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] | None = None
    # The header that carries the delivery's idempotency key, as the buyer wants it.
    idempotency_header: Annotated[str, Field(pattern=HEADER_NAME)] = DEFAULT_IDEMPOTENCY_HEADER
    # Where the buyer answers pings (a price for a lead's non-PII fields): engine.api.pings.
    ping_url: HttpUrl | None = None
    # How many days after a delivery this buyer may report feedback on it over the API
    # (POST /feedback); None: the deployment's LEADFLOW_FEEDBACK_RETURN_DAYS.
    return_window_days: Annotated[int, Field(ge=1, le=3650)] | None = None


def build_delivery(snapshot: Snapshot, settings: RecipientSettings, key: str) -> Delivery:
    return build_call(
        snapshot, str(settings.url), settings.mapping, settings.format, key,
        settings.idempotency_header,
    )  # fmt: skip


def plan_delivery(
    lead_id: str,
    snapshot: Snapshot,
    settings: RecipientSettings,
    step_id: str,
    step_index: int,
    full: CapCount | None = None,
) -> Call | StepResult:
    """The call to the buyer for one lead at the step at ``step_index``; at a ``full``
    cap no call but the lead's failure (``cap_full``)."""
    if full is not None:
        return cap_full(step_id, full)
    delivery = build_delivery(snapshot, settings, delivery_key(lead_id, snapshot, step_index))
    return Call(delivery, settings.timeout_ms, "Buyer", settings.max_concurrency, settings.auth)


def delivery_key(lead_id: str, snapshot: Snapshot, step_index: int) -> str:
    """The idempotency key of the lead's call at the step at ``step_index``: the id this
    step's first event gets on the first attempt. Made of the lead, its submission time
    and the step only, so every retry and every replay of the delivery carries the same."""
    return event_id(lead_id, submitted_at(lead_id, snapshot), step_index, 0)


def judge_delivery(
    snapshot: Snapshot,
    settings: RecipientSettings,
    step_id: str,
    delivery: Delivery,
    answer: Answer,
) -> StepResult:
    request, response = transaction(delivery, answer)

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

    data, error = read_answer(answer, "Buyer")
    if data is None:
        failed = draft(
            "recipient.error",
            "error",
            error,
            circuit_breaker_state=answer.breaker_state,
            timeout_ms=settings.timeout_ms,
            timed_out=answer.timed_out,
        )
        return StepResult([failed], proceed=True)

    if dig(data, settings.accept.path) != settings.accept.value:
        reason = dig(data, settings.reason_path)
        text = bounded(reason) if reason not in (None, "") else "Rejected by buyer"
        return StepResult([draft("recipient.failed", "failure", text, revenue=0.0)], proceed=True)

    price = dig(data, settings.price_path) if settings.price_path else None
    revenue = (
        float(price) if isinstance(price, int | float) and not isinstance(price, bool) else 0.0
    )
    buyer_id = dig(data, settings.id_path) if settings.id_path else None
    appended: Snapshot = {f"appended.{step_id}.price": revenue}
    if buyer_id is not None:
        appended[f"appended.{step_id}.id"] = bounded(buyer_id, MAX_ID)
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


def submitted_at(lead_id: str, snapshot: Snapshot) -> int:
    """The lead's submission time: its snapshot's, else the one its id carries. Cap windows
    and the idempotency key come from it, never the clock, so a retry or a replay lands in
    the same window, with the same key, as the first run."""
    submitted = snapshot.get("submission.timestamp")
    return submitted if isinstance(submitted, int) else id_timestamp_ms(lead_id)


def recipient_caps(
    flow_id: str, step_id: str, settings: RecipientSettings, lead_id: str, snapshot: Snapshot
) -> list[CapCheck]:
    """The caps a delivery of the lead counts in (none for a recipient without caps)."""
    scope = recipient_scope(flow_id, step_id)
    return cap_checks(scope, settings.caps, submitted_at(lead_id, snapshot))


def cap_full(step_id: str, full: CapCount) -> StepResult:
    """The buyer's ``full`` cap leaves it no slot: the lead fails here without a call and
    goes on (to the next buyer, or to its completion)."""
    capped = EventDraft(
        "recipient.failed",
        "failure",
        recipient_cap_reason(full),
        entity_id=step_id,
        revenue=0.0,
        cap_reached=True,
    )
    return StepResult([capped], proceed=True)


@dataclass(frozen=True, slots=True)
class CappedDelivery:
    """A judged delivery within caps: its events, and whether the lead keeps its slots."""

    result: StepResult
    # True: confirm the slots (the buyer took the lead); False: release them.
    keep_slots: bool


def within_caps(result: StepResult) -> CappedDelivery:
    """A delivery judged with a slot held in every cap: only a delivered lead counts (a
    refused or failed one gives its slots back), and its events say no cap was full."""
    delivered = any(d.type == "recipient.delivered" for d in result.events)
    drafts = [replace(d, cap_reached=False) for d in result.events]
    return CappedDelivery(StepResult(drafts, result.proceed), keep_slots=delivered)
