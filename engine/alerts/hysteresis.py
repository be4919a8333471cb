"""When an alert changes state: two thresholds and two minimum durations, so it does not flap.

A rule's value is judged ``breaching`` (past the trigger threshold), ``healthy`` (on the
good side of the resolve threshold, or no events at all) or ``undecided`` (between the
thresholds, or too few events to say). An alert that is not firing triggers once it has
been breaching for ``trigger_after_s`` without a break; a firing one resolves once it has
been healthy for ``resolve_after_s``. Undecided changes nothing but the timers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from engine.alerts.rules import AlertRule

Judgement = Literal["breaching", "healthy", "undecided"]
Transition = Literal["triggered", "resolved"]


@dataclass(frozen=True, slots=True)
class AlertState:
    firing: bool = False
    # When the current run of breaching (not firing) or healthy (firing) readings began.
    since_ms: int | None = None
    # The firing episode: its id (the alert's id in events and webhooks) and start.
    alert_id: str | None = None
    triggered_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "firing": self.firing,
            "since_ms": self.since_ms,
            "alert_id": self.alert_id,
            "triggered_ms": self.triggered_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertState:
        return cls(
            bool(data.get("firing")),
            data.get("since_ms"),
            data.get("alert_id"),
            data.get("triggered_ms"),
        )


def judge(rule: AlertRule, value: float | None, count: int) -> Judgement:
    """Which side of the thresholds ``value`` (from ``count`` events) is on."""
    if count == 0 or value is None:
        return "healthy"
    if count < rule.min_events:
        return "undecided"
    if rule.above is not None:
        if value > rule.above:
            return "breaching"
        return "healthy" if value <= rule.resolve_threshold else "undecided"
    assert rule.below is not None
    if value < rule.below:
        return "breaching"
    return "healthy" if value >= rule.resolve_threshold else "undecided"


def advance(
    rule: AlertRule, state: AlertState, judgement: Judgement, now_ms: int, new_alert_id: str
) -> tuple[AlertState, Transition | None]:
    """The state after a reading judged ``judgement`` at ``now_ms``, and the transition it
    makes, if any (``new_alert_id`` names the episode a trigger starts)."""
    if not state.firing:
        if judgement != "breaching":
            return replace(state, since_ms=None), None
        since = state.since_ms if state.since_ms is not None else now_ms
        if now_ms - since >= rule.trigger_after_s * 1000:
            return AlertState(True, None, new_alert_id, now_ms), "triggered"
        return replace(state, since_ms=since), None
    if judgement != "healthy":
        return replace(state, since_ms=None), None
    since = state.since_ms if state.since_ms is not None else now_ms
    if now_ms - since >= rule.resolve_after_s * 1000:
        return AlertState(), "resolved"
    return replace(state, since_ms=since), None
