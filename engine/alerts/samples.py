"""What one lead event contributes to a rule: a sample (who it is about, and its value).

A rate's sample is 1 (counts against: a rejection, a buyer's refusal) or 0; a duration's
is the step's ``ms``. ``bad`` samples are the ones an alert explains with: their reason
(PII masked here, before it is kept anywhere) and lead id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.alerts.rules import AlertRule
from engine.masking import mask_text

FLOW_SUBJECT = "flow"
MAX_REASON = 200
# Events that record a step's decision on a lead; the others (the submission as received,
# completion, retries, feedback) are bookkeeping and would dilute a step's mean duration.
_DECISION_PREFIXES = ("source.", "enhancement.", "filter.", "recipient.")
_NOT_DECISIONS = frozenset({"source.submitted", "source.pinged", "recipient.pinged"})
_BUYER_ANSWERS = frozenset({"recipient.delivered", "recipient.failed", "recipient.error"})


@dataclass(frozen=True, slots=True)
class Sample:
    subject: str  # "flow", or the step id the rule watches
    at_ms: int
    value: float
    bad: bool
    reason: str | None
    lead_id: str


def _epoch_ms(value: Any) -> int:
    """The event's time: decoded Avro gives a ``datetime`` (timestamp-millis), a stamped
    event not yet encoded epoch milliseconds."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value or 0)


def _reason(event: Mapping[str, Any]) -> str | None:
    reason = event.get("reason")
    if not reason:
        return None
    return mask_text(str(reason))[:MAX_REASON]


def sample_of(rule: AlertRule, event: Mapping[str, Any]) -> Sample | None:
    """``event``'s sample for ``rule``, or None when the rule does not count it."""
    kind = str(event.get("type", ""))
    step = str(event.get("step_id", ""))
    if rule.steps and rule.metric != "rejection_rate" and step not in rule.steps:
        return None
    at = _epoch_ms(event.get("timestamp"))
    lead = str(event.get("lead_id", ""))
    if rule.metric == "rejection_rate":
        if kind != "flow.completed":
            return None
        bad = event.get("outcome") != "success"
        return Sample(FLOW_SUBJECT, at, 1.0 if bad else 0.0, bad, _reason(event), lead)
    if rule.metric == "source_rejection_rate":
        if kind not in ("source.accepted", "source.rejected"):
            return None
        bad = kind == "source.rejected"
        return Sample(step, at, 1.0 if bad else 0.0, bad, _reason(event), lead)
    if rule.metric == "buyer_acceptance":
        if kind not in _BUYER_ANSWERS:
            return None
        accepted = kind == "recipient.delivered"
        return Sample(step, at, 1.0 if accepted else 0.0, not accepted, _reason(event), lead)
    # avg_step_ms: a slow decision is the bad one, whatever its outcome.
    if not kind.startswith(_DECISION_PREFIXES) or kind in _NOT_DECISIONS:
        return None
    ms = float(event.get("ms") or 0)
    slow = rule.above is not None and ms > rule.threshold
    return Sample(step, at, ms, slow, f"{kind} took {ms:.0f} ms" if slow else None, lead)


def metric_value(metric: str, total: float, count: int) -> float | None:
    """The rule's value from a window's sum and count: a percentage or a mean (None: empty)."""
    if count == 0:
        return None
    mean = total / count
    return mean * 100.0 if metric != "avg_step_ms" else mean
