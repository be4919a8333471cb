"""``flow.completed``: the one last event of every lead, with its final outcome.

Every lead that entered a flow gets exactly one, whether it was rejected,
filtered out or delivered, so "has this lead finished?" is one lookup, and
its totals come from the snapshot the previous step left.
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


def complete_flow(snapshot: Snapshot, last: EventDraft, flow_id: str) -> EventDraft:
    delivered = int(snapshot.get(TOTAL_DELIVERED) or 0)
    outcome: Outcome = "success" if delivered > 0 else last.outcome
    reason = None if delivered > 0 else last.reason
    return EventDraft(
        "flow.completed",
        outcome,
        reason,
        entity_id=flow_id,
        cost=float(snapshot.get(TOTAL_COST) or 0.0),
        revenue=float(snapshot.get(TOTAL_REVENUE) or 0.0),
    )
