"""Users' regular expressions run on RE2: a pattern that makes Python's backtracking ``re``
take exponential time on a short field is judged at once, and what RE2 cannot run is
refused when the flow is loaded (``leadflow flow apply``), with RE2's reason.

No clock is read: on ``re`` the first test would not finish before pytest's timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import FlowConfigError
from engine.flows import parse_flow
from engine.steps.filter import FilterSettings

BASIC = Path(__file__).parents[1] / "flows" / "basic.yaml"
_STATES = "[TX, CA, FL, AZ, NV, NM, CO, UT, GA, NC]"
_SERVICE_AREA = "{name: Service area, field: lead.state, op: in, value: " + _STATES + "}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pattern", [r"^(a+)+$", r"^(a|aa)+$", r"^(a|a?)+$", r"(.*a){20}$"])
def test_catastrophic_patterns_are_judged_in_linear_time(pattern: str) -> None:
    rules = FilterSettings.model_validate(
        {"rules": [{"field": "lead.note", "op": "regex", "value": pattern}]}
    )
    hostile = {"lead.note": "a" * 60 + "!"}  # 2^60 paths for a backtracking engine
    assert rules.check(hostile) is not None  # failed, and promptly


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(a)\1", "invalid escape sequence"), ("(?=a)", "invalid perl operator")],
)
def test_a_pattern_re2_cannot_run_is_refused_at_apply_with_the_reason(
    pattern: str, reason: str
) -> None:
    text = BASIC.read_text(encoding="utf-8")
    assert _SERVICE_AREA in text
    rule = f"{{name: Note, field: lead.note, op: regex, value: '{pattern}'}}"
    with pytest.raises(FlowConfigError, match=reason) as refused:
        parse_flow(text.replace(_SERVICE_AREA, rule), "f.yaml")
    assert "RE2" in str(refused.value) and "line" in str(refused.value)
