"""``flow.completed``: the one last event of every lead, with its final outcome.

Every lead that entered a flow gets exactly one, whether it was rejected,
filtered out or delivered, so "has this lead finished?" is one lookup. Its
snapshot is the lead's final state: the snapshot the step's last event
recorded, so a delivery's totals (revenue, delivered) are in it.

A lead's flow ends at the step that stops it, at the flow's last step, or, in a
multi-buyer flow with ``stop_at_first_delivery``, at the first buyer that takes it.
"""

from __future__ import annotations

from engine.steps.base import (
    TOTAL_COST,
    TOTAL_DELIVERED,
    TOTAL_REVENUE,
    EventDraft,
    Outcome,
    Snapshot,
)


def complete_flow(before: Snapshot, last: EventDraft, flow_id: str) -> EventDraft:
    """The completion of a lead whose step recorded ``last`` on top of ``before`` (the
    snapshot the step read). It changes the snapshot as ``last`` did, so both record
    the same state; an unchanged snapshot stays unchanged (and its bytes are reused)."""
    snapshot = {**before, **last.vars} if last.vars else before
    delivered = int(snapshot.get(TOTAL_DELIVERED) or 0)
    outcome: Outcome = "success" if delivered > 0 else last.outcome
    reason = None if delivered > 0 else last.reason
    return EventDraft(
        "flow.completed",
        outcome,
        reason,
        vars=dict(last.vars),
        entity_id=flow_id,
        cost=float(snapshot.get(TOTAL_COST) or 0.0),
        revenue=float(snapshot.get(TOTAL_REVENUE) or 0.0),
    )


def finishes(last: EventDraft, proceed: bool, is_last: bool, stop_at_first_delivery: bool) -> bool:
    """Whether the lead's flow ends at the step whose last event is ``last``."""
    sold = last.type == "recipient.delivered" and stop_at_first_delivery
    return not proceed or is_last or sold
