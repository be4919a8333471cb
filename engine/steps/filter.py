"""Filters: a rule set over the lead snapshot; a failed filter stops the lead.

``filter.failed`` names the rule that failed and the value that failed it, so
a seller can tell from the event alone why a lead went no further. The rule
language itself (``engine.steps.rules``) is shared with a source's acceptance criteria.
"""

from __future__ import annotations

from engine.steps.base import EventDraft, Snapshot, StepResult
from engine.steps.rules import Rule, RuleSet

__all__ = ["FilterSettings", "Rule", "evaluate_filter"]


class FilterSettings(RuleSet):
    """A filter step's settings: its rule set (``rules`` and ``match``)."""


def evaluate_filter(snapshot: Snapshot, settings: FilterSettings, step_id: str) -> StepResult:
    reason = settings.check(snapshot)
    if reason is None:
        return StepResult([EventDraft("filter.passed", "success", entity_id=step_id)], True)
    return StepResult([EventDraft("filter.failed", "failure", reason, entity_id=step_id)], False)
