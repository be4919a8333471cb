"""Each rule of seed 002 driven across its threshold and back, with synthetic events and a
fake clock: it triggers once, holds inside the hysteresis band, and resolves once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.alerts.evaluation import AlertChange, FlowAlerts
from engine.alerts.rules import AlertRule
from tests.engine.alerts.support import alert_rule

MIN = 60_000
T0 = 1_800_000_000_000
# One event in the window decides: for the tests of what an event counts as.
RATE_OVER_5_MINUTES = alert_rule(
    "{id: r, metric: rejection_rate, above: 30, window_minutes: 5, min_events: 1}"
)


def event(
    kind: str, at: int, *, step: str = "source", outcome: str = "success", **more: Any
) -> dict[str, Any]:
    lead = f"lead-{at}-{more.pop('n', 0)}"
    return {
        "type": kind,
        "timestamp": at,
        "step_id": step,
        "outcome": outcome,
        "lead_id": lead,
        "reason": more.pop("reason", None),
        "ms": more.pop("ms", 10),
        **more,
    }


class Run:
    """Events at one-minute steps of a fake clock, every change recorded."""

    def __init__(self, rule: AlertRule) -> None:
        self.alerts = FlowAlerts("solar", [rule])
        self.now = T0
        self.changes: list[AlertChange] = []

    @classmethod
    def of(cls, entry: str) -> Run:
        """A run of the rule written as in a flow's ``alerts:``."""
        return cls(alert_rule(entry))

    def minute(self, events: list[dict[str, Any]]) -> list[str]:
        self.now += MIN
        self.alerts.observe_all([{**e, "timestamp": self.now - 1} for e in events], self.now)
        found = self.alerts.evaluate(self.now)
        self.changes += found
        return [c.transition for c in found]


def completed(bad: int, good: int) -> list[dict[str, Any]]:
    return [
        event("flow.completed", 0, outcome="failure", reason="Filtered: Service area", n=i)
        for i in range(bad)
    ] + [event("flow.completed", 0, n=100 + i) for i in range(good)]


def test_rejection_rate_triggers_above_30_and_resolves_below_the_resolve_threshold() -> None:
    run = Run.of(
        "{id: rejections, metric: rejection_rate, above: 30, resolve: 20,"
        " window_minutes: 10, min_events: 10}"
    )
    assert run.minute(completed(2, 8)) == []  # 20 %
    assert run.minute(completed(8, 2)) == ["triggered"]  # 10/20 = 50 %
    change = run.changes[0]
    assert change.payload["top_reasons"][0] == {
        "reason": "Filtered: Service area",
        "count": 10,
        "share": 1.0,
    }
    assert len(change.payload["example_lead_ids"]) == 5
    assert change.payload["value"] == 50.0
    # 40, 35, 32, 30, 28.6, 27.5 %: down to inside the band (20-30 %), still firing.
    for _ in range(6):
        assert run.minute(completed(2, 8)) == []
    # The early minutes slide out of the 10-minute window; the rate falls under 20 %.
    transitions = []
    for _ in range(10):
        transitions += run.minute(completed(1, 9))
    assert transitions == ["resolved"]
    assert run.changes[-1].alert_id == change.alert_id


def test_source_rejection_rate_over_50_percent_per_source() -> None:
    run = Run.of(
        "{id: bad-source, metric: source_rejection_rate, above: 50, resolve: 40,"
        " window_minutes: 5, min_events: 4}"
    )
    rejected = [
        event("source.rejected", 0, reason="Missing required field: email", n=i) for i in range(6)
    ]
    accepted = [event("source.accepted", 0, n=10 + i) for i in range(4)]
    submitted = [event("source.submitted", 0, n=20 + i) for i in range(50)]  # not decisions
    assert run.minute(rejected[:2] + accepted + submitted) == []  # 2/6
    assert run.minute(rejected + accepted[:1]) == ["triggered"]  # 8/13 = 61 %
    assert run.changes[0].subject == "source"
    assert run.changes[0].payload["top_reasons"][0]["reason"] == "Missing required field: email"
    transitions = []
    for _ in range(6):
        transitions += run.minute(accepted * 2)
    assert transitions == ["resolved"]


def test_buyer_acceptance_under_70_percent_is_judged_per_recipient() -> None:
    run = Run.of(
        "{id: buyers, metric: buyer_acceptance, below: 70, resolve: 80,"
        " window_minutes: 5, min_events: 5}"
    )

    def answers(step: str, delivered: int, failed: int) -> list[dict[str, Any]]:
        return [event("recipient.delivered", 0, step=step, n=i) for i in range(delivered)] + [
            event(
                "recipient.failed",
                0,
                step=step,
                outcome="failure",
                reason="Duplicate lead for jane.doe@example.com",
                n=50 + i,
            )
            for i in range(failed)
        ]

    assert run.minute(answers("premier", 9, 1) + answers("summit", 9, 1)) == []
    assert run.minute(answers("premier", 0, 10) + answers("summit", 9, 1)) == ["triggered"]
    assert run.changes[0].subject == "premier"
    # The buyer's reason quoted an email: masked before it was kept.
    assert (
        run.changes[0].payload["top_reasons"][0]["reason"] == "Duplicate lead for j***@example.com"
    )
    assert run.minute(answers("premier", 7, 3)) == []  # 16/30: still under 80 %
    transitions = []
    for _ in range(6):
        transitions += run.minute(answers("premier", 10, 0))
    assert transitions == ["resolved"]


def test_avg_step_duration_over_2000_ms_holds_for_a_minimum_duration() -> None:
    run = Run.of(
        "{id: slow, metric: avg_step_ms, above: 2000, resolve: 1500, window_minutes: 2,"
        " min_events: 3, trigger_after_s: 120, resolve_after_s: 60}"
    )

    def decisions(ms: int) -> list[dict[str, Any]]:
        return [event("enhancement.success", 0, step="phone-check", ms=ms, n=i) for i in range(5)]

    assert run.minute(decisions(3000)) == []  # breaching since now
    assert run.minute(decisions(3000)) == []  # 60 s of 120
    assert run.minute(decisions(3000)) == ["triggered"]
    assert run.changes[0].payload["top_reasons"][0]["reason"] == "enhancement.success took 3000 ms"
    assert run.minute(decisions(100)) == []  # (3000*5 + 100*5)/10 = 1550: in the band
    assert run.minute(decisions(100)) == []  # healthy since now
    assert run.minute(decisions(100)) == ["resolved"]  # healthy for 60 s


def test_a_brief_breach_shorter_than_trigger_after_never_fires() -> None:
    run = Run.of(
        "{id: r, metric: rejection_rate, above: 30, window_minutes: 1, min_events: 5,"
        " trigger_after_s: 180}"
    )
    for _ in range(3):
        assert run.minute(completed(9, 1)) == []
        assert run.minute(completed(0, 10)) == []
    assert run.changes == []


def test_too_few_events_decide_nothing_and_an_empty_window_resolves() -> None:
    run = Run.of("{id: r, metric: rejection_rate, above: 30, window_minutes: 1, min_events: 5}")
    assert run.minute(completed(3, 0)) == []  # 100 % of 3 leads: too few
    assert run.minute(completed(5, 0)) == ["triggered"]
    assert run.minute(completed(1, 0)) == []  # 1 lead: undecided, still firing
    assert run.minute([]) == ["resolved"]  # nothing left in the window


def test_events_older_than_the_window_change_nothing() -> None:
    alerts = FlowAlerts("solar", [RATE_OVER_5_MINUTES])
    now = T0
    old = [event("flow.completed", now - 10 * MIN, outcome="failure", n=i) for i in range(20)]
    alerts.observe_all(old, now)
    assert alerts.evaluate(now) == []
    assert alerts.take_dirty() == []


def test_state_saved_and_loaded_goes_on_where_it_was() -> None:
    rule = alert_rule(
        "{id: r, metric: rejection_rate, above: 30, window_minutes: 5, min_events: 2}"
    )
    first = Run(rule)
    assert first.minute(completed(5, 0)) == ["triggered"]
    saved = {k: (i.window.to_json(), i.state.to_json()) for k, i in first.alerts.take_dirty()}
    second = FlowAlerts("solar", [rule])
    for key, (window, state) in saved.items():
        second.load(key, window, state)
    assert second.evaluate(first.now) == []  # already firing: no second trigger
    changes = second.evaluate(first.now + 10 * MIN)
    assert [c.transition for c in changes] == ["resolved"]
    assert changes[0].alert_id == first.changes[0].alert_id


def test_event_times_decoded_from_avro_count_like_epoch_milliseconds() -> None:
    alerts = FlowAlerts("solar", [RATE_OVER_5_MINUTES])
    at = datetime.fromtimestamp((T0 - 1) / 1000, UTC)  # what the codec hands back
    alerts.observe(event("flow.completed", 0, outcome="failure") | {"timestamp": at}, T0)
    assert [c.transition for c in alerts.evaluate(T0)] == ["triggered"]
