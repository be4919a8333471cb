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


def evaluate_filter(
    snapshot: Snapshot,
    settings: FilterSettings,
    step_id: str,
    rule_set: str | None = None,
    next_step_id: str | None = None,
) -> StepResult:
    """Judge the lead; both outcomes record every top-level rule's result
    (``rule_results``), ``filter.failed`` also the values that failed it and where the lead
    would have gone (``next_step_id``: the step after this one; None when it is the last).
    ``rule_set`` names the rules on events (the step's name; its id by default)."""
    reason, results = settings.judge(snapshot)
    draft = EventDraft(
        "filter.passed" if reason is None else "filter.failed",
        "success" if reason is None else "failure",
        reason,
        entity_id=step_id,
        rule_set=rule_set or step_id,
        rules_evaluated=len(results),
        rule_results=results,
    )
    if reason is None:
        return StepResult([draft], True)
    draft.failed_values = {
        field: value
        for r in results
        if r["passed"] is False
        for field, value in r["failed_values"].items()
    }
    draft.would_have_destination = next_step_id
    return StepResult([draft], False)
