"""The alert as a resource object: what the system event's ``data`` and the webhook carry.

Reasons were masked when sampled (``engine.alerts.samples``); lead ids are no PII. Only
the top reasons and a few example leads: enough to act on, small enough for a chat hook.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.alerts.hysteresis import Transition
from engine.alerts.rules import AlertRule
from engine.alerts.windows import Reading

TOP_REASONS = 5
EXAMPLE_LEADS = 5


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def alert_payload(
    *,
    flow_id: str,
    rule: AlertRule,
    subject: str,
    transition: Transition,
    alert_id: str,
    reading: Reading,
    value: float | None,
    now_ms: int,
) -> dict[str, Any]:
    bad = sum(n for _, n in reading.reasons) or 1
    return {
        "id": alert_id,
        "type": f"alert.{transition}",
        "status": "firing" if transition == "triggered" else "resolved",
        "flow_id": flow_id,
        "rule_id": rule.id,
        "metric": rule.metric,
        "subject": subject,
        "value": None if value is None else round(value, 3),
        "condition": {
            "above": rule.above,
            "below": rule.below,
            "resolve": rule.resolve_threshold,
            "window_minutes": rule.window_minutes,
            "min_events": rule.min_events,
        },
        "events_in_window": reading.count,
        "top_reasons": [
            {"reason": reason, "count": n, "share": round(n / bad, 3)}
            for reason, n in reading.reasons[:TOP_REASONS]
        ],
        "example_lead_ids": reading.examples[-EXAMPLE_LEADS:],
        "summary": rule.describe(value),
        "occurred_at": iso_ms(now_ms),
    }
