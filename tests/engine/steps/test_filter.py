"""Filters: pass or stop a lead, and say which rule stopped it and with what value.

Rules are written here as a flow file writes them (dicts are the YAML); time and
date rules are specified in test_filter_time.py, loading a flow in
test_filter_config.py.
"""

import re
from typing import Any

import pytest
import re2

from engine.steps.base import StepResult
from engine.steps.filter import FilterSettings, Rule, evaluate_filter

LEAD = {
    "lead.state": "WY",
    "lead.age": 42.0,
    "lead.email": "ada@example.com",
    "lead.email.domain": "example.com",
    "lead.postal_code": "78701",
    "lead.tcpa_consent": True,
    "lead.first_name": "Ada",
    "lead.note": "",
    "lead.phone_1": None,  # present but unparseable
    "submission.timestamp": 1_705_329_045_123,
}


def run(*rules: Rule | dict[str, Any], match: str = "all") -> StepResult:
    settings = FilterSettings.model_validate({"rules": list(rules), "match": match})
    return evaluate_filter(LEAD, settings, "area")


def passes(rule: dict[str, Any]) -> bool:
    return run(rule).proceed


def reason(*rules: Rule | dict[str, Any], match: str = "all") -> str | None:
    return run(*rules, match=match).last.reason


# --- outcome ---------------------------------------------------------------------


def test_passing_rules_record_filter_passed_and_continue() -> None:
    result = run(Rule(field="lead.tcpa_consent", op="equals", value=True))
    assert [e.type for e in result.events] == ["filter.passed"]
    assert result.last.outcome == "success"
    assert result.last.entity_id == "area"
    assert result.proceed


def test_failed_rule_stops_the_lead_and_names_rule_and_value() -> None:
    result = run(Rule(name="Service area", field="lead.state", op="in", value=["TX", "CA"]))
    assert not result.proceed
    assert result.last.type == "filter.failed"
    assert result.last.outcome == "failure"
    assert result.last.reason == "Service area: lead.state is 'WY'"


def test_an_unnamed_rule_is_described_by_its_field_op_and_value() -> None:
    assert reason({"field": "lead.state", "op": "equals", "value": "TX"}) == (
        "lead.state equals 'TX': lead.state is 'WY'"
    )


def test_missing_field_is_reported_as_missing() -> None:
    assert reason(Rule(field="lead.phone_2", op="exists")) == (
        "lead.phone_2 exists: lead.phone_2 is missing"
    )


def test_whole_numbers_are_shown_without_a_decimal_point() -> None:
    assert reason({"field": "lead.age", "op": "lt", "value": 18}) == (
        "lead.age lt 18: lead.age is 42"
    )


def test_long_values_are_cut_in_the_reason() -> None:
    settings = FilterSettings(rules=[Rule(field="lead.bio", op="equals", value="x")])
    result = evaluate_filter({"lead.bio": "a" * 500}, settings, "bio")
    assert result.last.reason is not None
    assert len(result.last.reason) < 120
    assert result.last.reason.endswith("...")


# --- operators -------------------------------------------------------------------

OPERATORS = [
    # equals / not_equals: booleans only equal booleans; numbers and decimal text as numbers
    ({"field": "lead.state", "op": "equals", "value": "WY"}, True),
    ({"field": "lead.state", "op": "equals", "value": "wy"}, False),
    ({"field": "lead.state", "op": "equals", "value": "wy", "ignore_case": True}, True),
    ({"field": "lead.tcpa_consent", "op": "equals", "value": True}, True),
    ({"field": "lead.tcpa_consent", "op": "equals", "value": 1}, False),
    ({"field": "lead.age", "op": "equals", "value": 42}, True),
    ({"field": "lead.age", "op": "equals", "value": "42"}, True),
    ({"field": "lead.postal_code", "op": "equals", "value": 78701}, True),
    ({"field": "lead.postal_code", "op": "equals", "value": "78701.0"}, False),  # texts as texts
    ({"field": "lead.age", "op": "equals", "value": "42.0"}, True),
    ({"field": "lead.missing", "op": "equals", "value": "x"}, False),
    ({"field": "lead.state", "op": "not_equals", "value": "TX"}, True),
    ({"field": "lead.state", "op": "not_equals", "value": "WY"}, False),
    ({"field": "lead.missing", "op": "not_equals", "value": "x"}, True),
    # in / not_in
    ({"field": "lead.state", "op": "in", "value": ["TX", "WY"]}, True),
    ({"field": "lead.state", "op": "in", "value": ["tx", "wy"], "ignore_case": True}, True),
    ({"field": "lead.state", "op": "in", "value": ["TX", "CA"]}, False),
    ({"field": "lead.postal_code", "op": "in", "value": [78701, 78702]}, True),
    ({"field": "lead.tcpa_consent", "op": "in", "value": [1, "true"]}, False),
    ({"field": "lead.missing", "op": "in", "value": ["x"]}, False),
    ({"field": "lead.state", "op": "not_in", "value": ["WY"]}, False),
    ({"field": "lead.state", "op": "not_in", "value": ["TX"]}, True),
    ({"field": "lead.missing", "op": "not_in", "value": ["x"]}, True),
    # range / between: inclusive, either bound optional, numbers only
    ({"field": "lead.age", "op": "range", "min": 18, "max": 65}, True),
    ({"field": "lead.age", "op": "range", "min": 42, "max": 42}, True),
    ({"field": "lead.age", "op": "range", "min": 43}, False),
    ({"field": "lead.age", "op": "between", "max": 41.5}, False),
    ({"field": "lead.age", "op": "between", "max": 42}, True),
    ({"field": "lead.postal_code", "op": "range", "min": 78000, "max": 79999}, True),
    ({"field": "lead.state", "op": "range", "min": 0}, False),
    ({"field": "lead.tcpa_consent", "op": "range", "min": 0, "max": 1}, False),
    # gte / gt / lte / lt
    ({"field": "lead.age", "op": "gte", "value": 42}, True),
    ({"field": "lead.age", "op": "gt", "value": 42}, False),
    ({"field": "lead.age", "op": "lte", "value": 42}, True),
    ({"field": "lead.age", "op": "lt", "value": 42}, False),
    ({"field": "lead.age", "op": "gt", "value": 41.9}, True),
    ({"field": "lead.state", "op": "gte", "value": 1}, False),
    ({"field": "lead.missing", "op": "lt", "value": 1}, False),
    # exists / not_exists: missing, null and empty text are all "not there"
    ({"field": "lead.state", "op": "exists"}, True),
    ({"field": "lead.missing", "op": "exists"}, False),
    ({"field": "lead.note", "op": "exists"}, False),
    ({"field": "lead.phone_1", "op": "exists"}, False),
    ({"field": "lead.missing", "op": "not_exists"}, True),
    ({"field": "lead.note", "op": "not_exists"}, True),
    ({"field": "lead.tcpa_consent", "op": "not_exists"}, False),
    # regex: searched, not anchored unless the pattern says so
    ({"field": "lead.email", "op": "regex", "value": r"@example\.com$"}, True),
    ({"field": "lead.email", "op": "regex", "value": r"^example"}, False),
    ({"field": "lead.email", "op": "regex", "value": r"EXAMPLE", "ignore_case": True}, True),
    ({"field": "lead.email", "op": "regex", "value": r"EXAMPLE"}, False),
    ({"field": "lead.age", "op": "regex", "value": r"42"}, False),
    # contains / starts_with / ends_with: text only
    ({"field": "lead.email", "op": "contains", "value": "@exa"}, True),
    ({"field": "lead.email", "op": "contains", "value": "@EXA"}, False),
    ({"field": "lead.email", "op": "contains", "value": "@EXA", "ignore_case": True}, True),
    ({"field": "lead.first_name", "op": "starts_with", "value": "Ad"}, True),
    ({"field": "lead.first_name", "op": "starts_with", "value": "ad"}, False),
    ({"field": "lead.first_name", "op": "starts_with", "value": "ad", "ignore_case": True}, True),
    ({"field": "lead.email.domain", "op": "ends_with", "value": ".com"}, True),
    ({"field": "lead.email.domain", "op": "ends_with", "value": ".gov"}, False),
    ({"field": "lead.missing", "op": "contains", "value": "a"}, False),
]


@pytest.mark.parametrize(("rule", "expected"), OPERATORS, ids=lambda v: str(v))
def test_operators(rule: dict[str, Any], expected: bool) -> None:
    assert passes(rule) is expected


def test_the_legacy_python_form_still_builds_rules() -> None:
    assert run(Rule(field="lead.age", op="gte", value=18)).proceed
    assert not run(Rule(field="lead.state", op="not_in", value=["WY"])).proceed


# --- groups ----------------------------------------------------------------------

TX = {"field": "lead.state", "op": "equals", "value": "TX"}
WY = {"field": "lead.state", "op": "equals", "value": "WY"}
ADULT = {"field": "lead.age", "op": "gte", "value": 18}
MINOR = {"name": "Minor", "field": "lead.age", "op": "lt", "value": 18}


def test_any_match_passes_when_one_rule_holds() -> None:
    assert run(TX, ADULT, match="any").proceed


def test_any_match_fails_with_every_reason() -> None:
    text = reason(TX, {"field": "lead.age", "op": "lte", "value": 18}, match="any")
    assert text == (
        "No rule matched: lead.state equals 'TX': lead.state is 'WY'; "
        "lead.age lte 18: lead.age is 42"
    )


def test_all_match_reports_the_first_rule_that_fails() -> None:
    assert reason(ADULT, TX, MINOR) == "lead.state equals 'TX': lead.state is 'WY'"


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ({"all": [ADULT, WY]}, True),
        ({"all": [ADULT, TX]}, False),
        ({"any": [TX, WY]}, True),
        ({"any": [TX, MINOR]}, False),
        ({"not": TX}, True),
        ({"not": WY}, False),
        ({"not": {"not": WY}}, True),
        ({"any": [{"all": [TX, ADULT]}, {"all": [WY, ADULT]}]}, True),
        ({"any": [{"all": [TX, ADULT]}, {"all": [WY, MINOR]}]}, False),
        ({"all": [{"any": [TX, WY]}, {"not": MINOR}]}, True),
    ],
)
def test_groups_nest(group: dict[str, Any], expected: bool) -> None:
    assert passes(group) is expected


def test_groups_nest_to_any_depth() -> None:
    rule: dict[str, Any] = WY
    for depth in range(60):
        rule = {"all": [rule]} if depth % 2 else {"any": [TX, rule]}
    assert passes(rule)
    assert not passes({"not": rule})


def test_a_named_group_prefixes_the_reason_of_its_failing_rule() -> None:
    assert reason({"name": "Texas adults", "all": [ADULT, TX]}) == (
        "Texas adults: lead.state equals 'TX': lead.state is 'WY'"
    )


def test_a_failed_nested_any_lists_what_each_rule_saw() -> None:
    text = reason({"name": "Reachable", "any": [TX, MINOR]})
    assert text == (
        "Reachable: none of (lead.state equals 'TX': lead.state is 'WY'; Minor: lead.age is 42)"
    )


def test_an_unnamed_nested_any_reads_none_of() -> None:
    assert reason({"all": [ADULT, {"any": [TX, MINOR]}]}) == (
        "none of (lead.state equals 'TX': lead.state is 'WY'; Minor: lead.age is 42)"
    )


def test_a_failed_not_names_the_rule_it_negates_and_the_values() -> None:
    assert reason({"not": WY}) == "not (lead.state equals 'WY'): lead.state is 'WY'"
    assert reason({"name": "Outside Wyoming", "not": WY}) == "Outside Wyoming: lead.state is 'WY'"
    assert reason({"not": {"all": [WY, ADULT]}}) == (
        "not (all of (lead.state equals 'WY', lead.age gte 18)): lead.state is 'WY', lead.age is 42"
    )


# --- compiled once ---------------------------------------------------------------


def test_rules_are_compiled_when_loaded_not_per_lead(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = FilterSettings.model_validate(
        {"rules": [{"field": "lead.email", "op": "regex", "value": r"@example\.com$"}]}
    )
    compiled = settings.compiled

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pattern was compiled while judging a lead")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(re2, "compile", refuse)
    for _ in range(3):
        assert evaluate_filter(LEAD, settings, "f").proceed
    assert settings.compiled is compiled


def test_copying_settings_with_other_rules_judges_by_the_new_rules() -> None:
    settings = FilterSettings.model_validate({"rules": [WY]})
    copy = settings.model_copy(update={"rules": [Rule.model_validate(TX)]})
    assert evaluate_filter(LEAD, settings, "f").proceed
    assert not evaluate_filter(LEAD, copy, "f").proceed


def test_equal_rules_make_equal_settings_whatever_was_compiled() -> None:
    one = FilterSettings.model_validate({"rules": [WY, {"not": MINOR}]})
    two = FilterSettings.model_validate({"rules": [WY, {"not": MINOR}]})
    assert one == two


def test_settings_survive_a_dump_and_reload() -> None:
    rules = {
        "match": "any",
        "rules": [
            {"not": {"op": "time_of_day", "from": "09:00", "to": "17:00", "time_zone": "UTC"}},
            {"all": [ADULT, {"field": "lead.dob", "op": "before", "value": "2000-01-01"}]},
        ],
    }
    settings = FilterSettings.model_validate(rules)
    dumped = settings.model_dump(mode="json")
    assert FilterSettings.model_validate(dumped) == settings
    assert "from" in str(dumped) and "from_" not in str(dumped)


# -- what filter events record (schema v5) -------------------------------------------------


def test_a_failed_filter_records_every_rule_its_result_the_failed_values_and_the_next_step() -> (
    None
):
    settings = FilterSettings.model_validate(
        {
            "rules": [
                {"name": "Service area", "field": "lead.state", "op": "in", "value": ["TX"]},
                {"name": "Adult", "field": "lead.age", "op": "gte", "value": 18},
            ]
        }
    )
    result = evaluate_filter(LEAD, settings, "area", "Service area check", "premier")
    (failed,) = result.events
    assert failed.type == "filter.failed"
    assert (failed.rule_set, failed.rules_evaluated) == ("Service area check", 2)
    assert failed.rule_results is not None
    assert [(r["name"], r["passed"], r["failed_values"]) for r in failed.rule_results] == [
        ("Service area", False, {"lead.state": "'WY'"}),
        ("Adult", True, {}),
    ]
    assert failed.failed_values == {"lead.state": "'WY'"}
    assert failed.would_have_destination == "premier"


def test_a_passed_filter_records_the_rules_but_no_failed_values_or_destination() -> None:
    settings = FilterSettings.model_validate(
        {"rules": [{"field": "lead.state", "op": "equals", "value": "WY"}]}
    )
    (passed,) = evaluate_filter(LEAD, settings, "area", None, "premier").events
    assert passed.type == "filter.passed"
    assert passed.rule_set == "area"  # the step id when the step has no name
    assert passed.rules_evaluated == 1
    assert passed.rule_results is not None
    assert passed.rule_results[0]["passed"] is True
    assert passed.rule_results[0]["rule"] == '{"field":"lead.state","op":"equals","value":"WY"}'
    assert passed.failed_values is None
    assert passed.would_have_destination is None


def test_a_failed_group_names_only_the_values_of_its_failed_rules() -> None:
    group = {
        "name": "Reachable",
        "all": [
            {"field": "lead.email.domain", "op": "equals", "value": "example.com"},
            {"field": "lead.phone_1", "op": "exists"},
        ],
    }
    (failed,) = run(group).events
    assert failed.failed_values == {"lead.phone_1": "None"}
