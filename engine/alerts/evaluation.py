"""A flow's rules over its events: windows fed sample by sample, judged at a given time.

``FlowAlerts`` is the whole evaluator state of one flow, a plain object: the runtime
loads it from Postgres, feeds it decoded events and the clock, saves what changed with
the consumer's offsets, and carries the changes out. Time is always passed in (the
event's own for bucketing, ``now_ms`` for judging), so tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.alerts.hysteresis import AlertState, Transition, advance, judge
from engine.alerts.payloads import alert_payload, iso_ms
from engine.alerts.rules import AlertRule
from engine.alerts.samples import metric_value, sample_of
from engine.alerts.windows import SlidingWindow
from engine.ids import derived_lead_id

Key = tuple[str, str]  # (rule id, subject)


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert that triggered or resolved, with its resource object (``payload``)."""

    rule: AlertRule
    subject: str
    transition: Transition
    alert_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class RuleInstance:
    window: SlidingWindow
    state: AlertState


class FlowAlerts:
    def __init__(self, flow_id: str, rules: Sequence[AlertRule]) -> None:
        self.flow_id = flow_id
        self.rules = {r.id: r for r in rules}
        self.instances: dict[Key, RuleInstance] = {}
        self.dirty: set[Key] = set()

    def load(self, key: Key, window: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """A stored instance; one of a rule the flow no longer has is dropped."""
        rule = self.rules.get(key[0])
        if rule is None:
            return
        self.instances[key] = RuleInstance(
            SlidingWindow.from_json(dict(window), rule.window_ms), AlertState.from_json(dict(state))
        )

    def _instance(self, rule: AlertRule, subject: str) -> RuleInstance:
        key = (rule.id, subject)
        if key not in self.instances:
            self.instances[key] = RuleInstance(SlidingWindow(rule.window_ms), AlertState())
        return self.instances[key]

    def observe(self, event: Mapping[str, Any], now_ms: int) -> None:
        for rule in self.rules.values():
            sample = sample_of(rule, event)
            if sample is None:
                continue
            if self._instance(rule, sample.subject).window.add(sample, now_ms):
                self.dirty.add((rule.id, sample.subject))

    def observe_all(self, events: Iterable[Mapping[str, Any]], now_ms: int) -> None:
        for event in events:
            self.observe(event, now_ms)

    def evaluate(self, now_ms: int) -> list[AlertChange]:
        """Judge every instance at ``now_ms``; the triggers and resolutions it makes."""
        changes = []
        for (rule_id, subject), instance in sorted(self.instances.items()):
            rule = self.rules[rule_id]
            instance.window.prune(now_ms)
            reading = instance.window.read(now_ms)
            value = metric_value(rule.metric, reading.total, reading.count)
            new_id = derived_lead_id(now_ms, self.flow_id, rule_id, subject)
            state, transition = advance(
                rule, instance.state, judge(rule, value, reading.count), now_ms, new_id
            )
            if state != instance.state:
                self.dirty.add((rule_id, subject))
            if transition is not None:
                alert_id = new_id if transition == "triggered" else instance.state.alert_id
                payload = alert_payload(
                    flow_id=self.flow_id,
                    rule=rule,
                    subject=subject,
                    transition=transition,
                    alert_id=alert_id or new_id,
                    reading=reading,
                    value=value,
                    now_ms=now_ms,
                )
                if transition == "resolved" and instance.state.triggered_ms is not None:
                    payload["triggered_at"] = iso_ms(instance.state.triggered_ms)
                changes.append(AlertChange(rule, subject, transition, alert_id or new_id, payload))
            instance.state = state
        return changes

    def take_dirty(self) -> list[tuple[Key, RuleInstance]]:
        """The instances changed since the last call (what the next save writes)."""
        keys, self.dirty = sorted(self.dirty), set()
        return [(k, self.instances[k]) for k in keys if k in self.instances]
