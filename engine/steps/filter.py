"""Filters: a rule set over the lead snapshot; a failed filter stops the lead.

``filter.failed`` names the rule that failed and the value that failed it, so
a seller can tell from the event alone why a lead went no further.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from engine.fields import Scalar
from engine.model import ConfigModel
from engine.steps.base import EventDraft, Snapshot, StepResult


class Rule(ConfigModel):
    field: str
    op: Literal[
        "equals", "not_equals", "in", "not_in", "exists", "not_exists", "regex", "gte", "lte"
    ]
    value: Any = None
    name: str | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Rule:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "regex":
            if not isinstance(self.value, str):
                raise ValueError("op 'regex' needs a pattern string")
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"bad regex {self.value!r}: {exc}") from exc
        if self.op in ("gte", "lte") and not isinstance(self.value, int | float):
            raise ValueError(f"op {self.op!r} needs a number")
        return self


class FilterSettings(ConfigModel):
    rules: Annotated[list[Rule], Field(min_length=1)]
    match: Literal["all", "any"] = "all"


_MISSING = object()


def _holds(rule: Rule, value: Scalar | object) -> bool:
    match rule.op:
        case "exists":
            return value is not _MISSING and value is not None and value != ""
        case "not_exists":
            return value is _MISSING or value is None or value == ""
        case "equals":
            return bool(value == rule.value)
        case "not_equals":
            return bool(value != rule.value)
        case "in":
            return value in rule.value
        case "not_in":
            return value not in rule.value
        case "regex":
            return isinstance(value, str) and re.search(str(rule.value), value) is not None
        case "gte" | "lte":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            return bool(value >= rule.value if rule.op == "gte" else value <= rule.value)
    raise AssertionError(f"unhandled rule op {rule.op}")  # pragma: no cover - the model forbids it


def _describe(rule: Rule, value: Scalar | object) -> str:
    shown = "missing" if value is _MISSING else repr(value)
    label = rule.name or f"{rule.field} {rule.op} {rule.value!r}"
    return f"{label}: {rule.field} is {shown}"


def evaluate_filter(snapshot: Snapshot, settings: FilterSettings, step_id: str) -> StepResult:
    failed: list[str] = []
    for rule in settings.rules:
        value = snapshot.get(rule.field, _MISSING)
        if _holds(rule, value):
            if settings.match == "any":
                return StepResult([EventDraft("filter.passed", "success", entity_id=step_id)], True)
        else:
            failed.append(_describe(rule, value))
            if settings.match == "all":
                break
    if settings.match == "all" and not failed:
        return StepResult([EventDraft("filter.passed", "success", entity_id=step_id)], True)
    reason = failed[0] if settings.match == "all" else "No rule matched: " + "; ".join(failed)
    return StepResult([EventDraft("filter.failed", "failure", reason, entity_id=step_id)], False)
