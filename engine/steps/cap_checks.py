"""Cap decisions as plain values: which counter a lead counts in, whether a cap is full, why.

Everything here is pure; ``engine.state.store`` reads and writes the counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.caps import CapSpec, Duration
from engine.steps.cap_windows import Window, window_for

ADJECTIVES: dict[Duration, str] = {
    "minute": "Minute",
    "hour": "Hourly",
    "day": "Daily",
    "week": "Weekly",
    "month": "Monthly",
}

Scope = str  # what a cap belongs to, e.g. "flow:solar", "recipient:solar/premier"


def flow_scope(flow_id: str) -> Scope:
    return f"flow:{flow_id}"


def source_scope(flow_id: str, step_id: str) -> Scope:
    return f"source:{flow_id}/{step_id}"


def recipient_scope(flow_id: str, step_id: str) -> Scope:
    return f"recipient:{flow_id}/{step_id}"


@dataclass(frozen=True, slots=True)
class CapCheck:
    """One cap as it applies to one lead: its counter (key and window) and its maximum."""

    key: str
    window: Window
    spec: CapSpec
    kind: str  # "flow", "source" or "recipient": the scope's kind, for reasons


@dataclass(frozen=True, slots=True)
class CapCount:
    """A counter as read under its lock: how many leads it holds and whether this one is in."""

    check: CapCheck
    count: int
    holds_lead: bool

    @property
    def full(self) -> bool:
        """Full for this lead: a lead already counted keeps its place even if the
        maximum was lowered since, so a re-run decides as the first run did."""
        return not self.holds_lead and self.count >= self.check.spec.maximum


def cap_key(scope: Scope, spec: CapSpec) -> str:
    """The counter's name. The maximum is left out on purpose: raising a cap
    mid-day keeps counting the same leads instead of starting again from zero."""
    key = f"{scope}:{spec.duration}@{spec.time_zone}"
    return f"{key}:{spec.name}" if spec.name else key


def cap_checks(scope: Scope, specs: Iterable[CapSpec], submitted_ms: int) -> list[CapCheck]:
    """The caps of ``scope`` for a lead submitted at ``submitted_ms``, one per counter.

    Two unnamed caps of the same period and zone share a counter (they count
    the same leads); the tighter maximum is the one that can fill it.
    """
    kind = scope.split(":", 1)[0]
    by_counter: dict[tuple[str, Window], CapCheck] = {}
    for spec in specs:
        window = window_for(spec.duration, spec.time_zone, submitted_ms)
        check = CapCheck(cap_key(scope, spec), window, spec, kind)
        known = by_counter.get((check.key, window))
        if known is None or spec.maximum < known.spec.maximum:
            by_counter[(check.key, window)] = check
    return list(by_counter.values())


def first_full(counts: Sequence[CapCount]) -> CapCount | None:
    """The cap that stops the lead, in the order the caps were given, or None."""
    return next((c for c in counts if c.full), None)


def cap_label(spec: CapSpec, kind: str | None = None) -> str:
    """``Daily cap``, ``Hourly flow cap``, ``Weekly cap "Weekend buyers"``."""
    words = [ADJECTIVES[spec.duration], *([kind] if kind else []), "cap"]
    label = " ".join(words)
    return f'{label} "{spec.name}"' if spec.name else label


def recipient_cap_reason(count: CapCount) -> str:
    """``Daily cap reached (100/100)``: the reason of a ``recipient.failed`` at its cap."""
    spec = count.check.spec
    return f"{cap_label(spec)} reached ({count.count}/{spec.maximum})"


def source_cap_reason(count: CapCount) -> str:
    """``Cap reached: Daily flow cap (100/100)``: the reason of a capped ``source.rejected``."""
    spec = count.check.spec
    return f"Cap reached: {cap_label(spec, count.check.kind)} ({count.count}/{spec.maximum})"
