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
    # The criteria and each rule's result (the schema's AcceptanceCriteria record).
    acceptance_criteria: dict[str, Any] | None = None
    retry_status: str | None = None
    circuit_breaker_state: str | None = None
    # The moment the event records when it is not the end of the step's handling:
    # source.submitted records the lead's arrival, before any parsing.
    at_ms: int | None = None
    ping_limit_reached: bool | None = None
    client_ip: str | None = None
    source_config_version: str | None = None
    # Filter events: what the rules were, how each judged the lead, what failed.
    rule_set: str | None = None
    rules_evaluated: int | None = None
    rule_results: list[dict[str, Any]] | None = None
    failed_values: dict[str, str] | None = None
    would_have_destination: str | None = None
    # Calling steps (enhancements, buyers): retries before this attempt, the timeout.
    retry_attempts: int | None = None
    timeout_ms: int | None = None
    timed_out: bool | None = None
    metrics_changed: list[str] | None = None
    # source.rejected: each validation failed (the schema's FieldError records).
    field_errors: list[dict[str, Any]] | None = None
    # Retry events: the reason of the error that the retry answers.
    original_failure: str | None = None


@dataclass(slots=True)
class StepResult:
    """The events a step records for one lead, in order, and whether the lead goes on."""

    events: list[EventDraft]
    proceed: bool

    @property
    def last(self) -> EventDraft:
        return self.events[-1]
