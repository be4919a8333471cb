"""What a step decides, before the runtime stamps it into events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.fields import Scalar

Outcome = Literal["success", "failure", "error"]
Snapshot = dict[str, Scalar]

# Running totals the engine keeps in the snapshot, so that flow.completed can be
# computed from the last event alone (state lives in events, not in processes).
TOTAL_COST = "totals.cost"
TOTAL_REVENUE = "totals.revenue"
TOTAL_DELIVERED = "totals.delivered"


@dataclass(slots=True)
class EventDraft:
    type: str
    outcome: Outcome
    reason: str | None = None
    vars: Snapshot = field(default_factory=dict)
    appended: Snapshot = field(default_factory=dict)
    entity_id: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    cost: float | None = None
    revenue: float | None = None
    wait_ms: int = 0
    cap_reached: bool | None = None
    key: str | None = None
    module_id: str | None = None
    acceptance_criteria: str | None = None
    retry_status: str | None = None
    circuit_breaker_state: str | None = None


@dataclass(slots=True)
class StepResult:
    """The events a step records for one lead, in order, and whether the lead goes on."""

    events: list[EventDraft]
    proceed: bool

    @property
    def last(self) -> EventDraft:
        return self.events[-1]
