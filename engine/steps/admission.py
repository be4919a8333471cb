"""Source admission: whether a lead the field checks accepted may enter the flow.

A lead is put to the flow's shared state (``engine.state``): is it a duplicate of
an earlier lead, is a flow or source cap full? ``admission_question`` says what to
ask, the runtime asks the state store, and ``admit`` says what the answer means:
the lead goes on as accepted, or gets ``source.rejected`` with the duplicate's or
the full cap's reason. Duplicates are asked first, so a duplicate takes no cap slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from engine.caps import CapSpec
from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, StepResult
from engine.steps.cap_checks import (
    CapCheck,
    CapCount,
    cap_checks,
    flow_scope,
    source_cap_reason,
    source_scope,
)
from engine.steps.duplicates import LeadOrder, duplicate_reason, fingerprint
from engine.steps.source import SourceSettings

# A rejected lead never entered the flow: it carries no running totals.
_TOTALS = (TOTAL_COST, TOTAL_REVENUE, TOTAL_DELIVERED)


@dataclass(frozen=True, slots=True)
class AdmissionQuestion:
    """What the source asks the flow's shared state about one accepted lead."""

    lead: LeadOrder
    # The flow's caps, then the source's, each for the lead's submission time.
    checks: list[CapCheck]
    # The lead's duplicate fingerprint; None when duplicates are not checked (or the lead
    # has none of the duplicate fields, so nothing can match it).
    fingerprint: bytes | None = None
    window_days: int = 0


def admission_question(
    result: StepResult,
    lead: LeadOrder,
    flow_id: str,
    flow_caps: Sequence[CapSpec],
    step_id: str,
    settings: SourceSettings,
) -> AdmissionQuestion | None:
    """What to ask about the lead the source step decided ``result`` for; None when there
    is nothing to ask, because the lead was rejected already."""
    if not result.proceed:
        return None
    accepted = result.last
    checks = cap_checks(flow_scope(flow_id), flow_caps, lead.submitted_ms)
    checks += cap_checks(source_scope(flow_id, step_id), settings.caps, lead.submitted_ms)
    window = settings.duplicate_window_days
    if window is None:
        return AdmissionQuestion(lead, checks)
    fp = fingerprint(flow_id, accepted.vars, settings.duplicate_fields)
    return AdmissionQuestion(lead, checks, fp, window if fp is not None else 0)


def admit(
    result: StepResult,
    question: AdmissionQuestion,
    duplicate_of: LeadOrder | None,
    capped: CapCount | None,
) -> StepResult:
    """The accepted ``result`` as the state answered ``question``: the lead duplicates
    ``duplicate_of``, or ``capped`` is the cap that is full, or neither (admitted).

    Where the lead was put to caps, its events say whether one was full (``cap_reached``).
    """
    submitted, accepted = result.events
    if question.checks:
        accepted = replace(accepted, cap_reached=capped is not None)
    if duplicate_of is None and capped is None:
        return StepResult([submitted, accepted], proceed=True)
    if duplicate_of is not None:
        reason, check = duplicate_reason(duplicate_of), "duplicate"
    else:
        assert capped is not None
        reason, check = source_cap_reason(capped), "cap"
    # The accepted draft's source fields (criteria, client, configuration) carry over.
    rejected = replace(
        accepted,
        type="source.rejected",
        outcome="failure",
        reason=reason,
        vars={k: v for k, v in accepted.vars.items() if k not in _TOTALS},
        cost=None,
        # Not a field's fault: the lead as a whole (the schema's FieldError, field null).
        field_errors=[{"field": None, "check": check, "message": reason}],
    )
    return StepResult([submitted, rejected], proceed=False)
