"""Filters: pass or stop a lead, and say which rule stopped it and with what value."""

import pytest

from engine.steps.filter import FilterSettings, Rule
from engine.steps.filter import evaluate_filter

LEAD = {
    "lead.state": "WY",
    "lead.age": 42,
    "lead.email": "ada@example.com",
    "lead.tcpa_consent": True,
}


def run(*rules: Rule, match: str = "all"):  # type: ignore[no-untyped-def]
    return evaluate_filter(LEAD, FilterSettings(rules=list(rules), match=match), "area")  # type: ignore[arg-type]


def test_passing_rules_record_filter_passed_and_continue() -> None:
    result = run(Rule(field="lead.tcpa_consent", op="equals", value=True))
    assert [e.type for e in result.events] == ["filter.passed"]
    assert result.proceed


def test_failed_rule_stops_the_lead_and_names_rule_and_value() -> None:
    result = run(Rule(name="Service area", field="lead.state", op="in", value=["TX", "CA"]))
    assert not result.proceed
    assert result.last.type == "filter.failed"
    assert result.last.outcome == "failure"
    assert result.last.reason == "Service area: lead.state is 'WY'"


def test_missing_field_is_reported_as_missing() -> None:
    result = run(Rule(field="lead.phone_1", op="exists"))
    assert result.last.reason == "lead.phone_1 exists None: lead.phone_1 is missing"


@pytest.mark.parametrize(
    ("rule", "passes"),
    [
        (Rule(field="lead.age", op="gte", value=18), True),
        (Rule(field="lead.age", op="lte", value=40), False),
        (Rule(field="lead.email", op="regex", value=r"@example\.com$"), True),
        (Rule(field="lead.state", op="not_in", value=["WY"]), False),
        (Rule(field="lead.state", op="not_equals", value="TX"), True),
        (Rule(field="lead.nope", op="not_exists"), True),
        (Rule(field="lead.state", op="gte", value=1), False),
    ],
)
def test_rule_operators(rule: Rule, passes: bool) -> None:
    assert run(rule).proceed is passes


def test_any_match_passes_when_one_rule_holds() -> None:
    result = run(
        Rule(field="lead.state", op="equals", value="TX"),
        Rule(field="lead.age", op="gte", value=18),
        match="any",
    )
    assert result.proceed


def test_any_match_fails_with_every_reason() -> None:
    result = run(
        Rule(field="lead.state", op="equals", value="TX"),
        Rule(field="lead.age", op="lte", value=18),
        match="any",
    )
    assert not result.proceed
    assert result.last.reason is not None and result.last.reason.startswith("No rule matched: ")
    assert "lead.state is 'WY'" in result.last.reason and "lead.age is 42" in result.last.reason
