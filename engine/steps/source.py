"""Source acceptance: parse the submission, type its fields, check acceptance criteria.

Records ``source.submitted`` (the raw data, before any parsing) and then
``source.accepted`` (typed fields, cost assigned) or ``source.rejected`` with a
reason a source can act on, e.g. ``Missing required field: email``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from engine.caps import CapSpec
from engine.fields import PARSERS, Scalar
from engine.model import ConfigModel
from engine.steps.base import (
    TOTAL_COST,
    TOTAL_DELIVERED,
    TOTAL_REVENUE,
    EventDraft,
    Snapshot,
    StepResult,
)

MAX_RAW_VALUE = 4096

FieldType = Literal["string", "email", "phone", "state", "postal_code", "boolean", "number"]


class FieldSpec(ConfigModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    type: FieldType = "string"
    required: bool = False


class SourceSettings(ConfigModel):
    fields: list[FieldSpec]
    cost: float = 0.0
    caps: list[CapSpec] = Field(default_factory=list)
    # Reject a lead whose duplicate_fields match a lead accepted within the window.
    duplicate_window_days: Annotated[int, Field(ge=1, le=365)] | None = None
    duplicate_fields: list[str] = Field(default_factory=lambda: ["email", "phone_1"])


@dataclass(frozen=True, slots=True)
class Submission:
    body: bytes
    lead_id: str
    submitted_ms: int
    flow_id: str
    flow_name: str
    source_id: str
    source_name: str
    content_type: str = "application/json"


def _raw_vars(data: dict[str, Any]) -> Snapshot:
    """The submitted values as they came, for source.submitted; structures are
    kept as JSON text so the snapshot stays flat."""
    out: Snapshot = {}
    for key, value in data.items():
        if isinstance(value, bool | int | float | str) or value is None:
            out[f"lead.{key}"] = value[:MAX_RAW_VALUE] if isinstance(value, str) else value
        else:
            out[f"lead.{key}"] = orjson.dumps(value).decode()[:MAX_RAW_VALUE]
    return out


def _base_vars(sub: Submission) -> Snapshot:
    return {
        "lead.id": sub.lead_id,
        "submission.timestamp": sub.submitted_ms,
        "flow.id": sub.flow_id,
        "flow.name": sub.flow_name,
        "source.id": sub.source_id,
        "source.name": sub.source_name,
    }


def accept_submission(sub: Submission, settings: SourceSettings) -> StepResult:
    base = _base_vars(sub)
    request = {
        "method": "POST",
        "uri": f"kafka://intake/{sub.flow_id}",
        "headers": {"content-type": sub.content_type},
        "body": sub.body[:65536].decode("utf-8", errors="replace"),
    }
    problem: str | None
    try:
        data = orjson.loads(sub.body)
    except orjson.JSONDecodeError as exc:
        data, problem = None, f"Invalid JSON: {exc.msg} at position {exc.pos}"
    else:
        problem = None if isinstance(data, dict) else "Invalid lead: expected a JSON object"

    submitted = EventDraft(
        type="source.submitted",
        outcome="success",
        vars={**base, **(_raw_vars(data) if isinstance(data, dict) else {})},
        entity_id=sub.source_id,
        request=request,
    )
    if problem is not None or not isinstance(data, dict):
        rejected = EventDraft(
            "source.rejected", "failure", problem, vars=dict(base), entity_id=sub.source_id
        )
        return StepResult([submitted, rejected], proceed=False)

    typed: Snapshot = dict(base)
    problems: list[str] = []
    for spec in settings.fields:
        raw = data.get(spec.name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if spec.required:
                problems.append(f"Missing required field: {spec.name}")
            continue
        parsed = PARSERS[spec.type](raw)
        typed[f"lead.{spec.name}"] = parsed.value
        for component, value in parsed.components.items():
            typed[f"lead.{spec.name}.{component}"] = value
        if parsed.problem and spec.required:
            problems.append(f"Invalid {spec.name}: {parsed.problem}")

    if problems:
        rejected = EventDraft(
            "source.rejected", "failure", "; ".join(problems), vars=typed, entity_id=sub.source_id
        )
        return StepResult([submitted, rejected], proceed=False)

    totals: dict[str, Scalar] = {TOTAL_COST: settings.cost, TOTAL_REVENUE: 0.0, TOTAL_DELIVERED: 0}
    accepted = EventDraft(
        "source.accepted",
        "success",
        vars={**typed, **totals},
        entity_id=sub.source_id,
        cost=settings.cost,
    )
    return StepResult([submitted, accepted], proceed=True)
