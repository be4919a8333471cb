"""Rules in a flow file: the syntax that loads, and mistakes refused at load with the
line and the field, before any lead is judged by them."""

import textwrap
from pathlib import Path

import pytest

from engine.errors import FlowConfigError
from engine.flows import FilterStep, Flow, SourceStep, load_flow, parse_flow
from engine.steps.filter import evaluate_filter

DEMO = Path(__file__).parents[3] / "flows" / "demo.yaml"

FLOW = """\
id: f
name: F
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields: [{name: state, type: state}, {name: age, type: number}]
  - id: rules
    kind: filter
    name: Rules
    settings:
{settings}
"""


def flow_with(settings: str) -> str:
    return FLOW.replace(
        "{settings}", textwrap.indent(textwrap.dedent(settings).strip("\n"), " " * 6)
    )


def filter_of(flow: Flow) -> FilterStep:
    return next(step for step in flow.steps if isinstance(step, FilterStep))


def test_the_full_syntax_loads() -> None:
    flow = parse_flow(
        flow_with(
            """
            match: all
            rules:
              - {name: Service area, field: lead.state, op: in, value: [TX, CA, WY]}
              - any:
                  - {field: lead.age, op: range, min: 18, max: 65}
                  - all:
                      - {field: lead.age, op: gt, value: 65}
                      - {field: lead.retired, op: equals, value: true}
              - not: {field: lead.email.domain, op: ends_with, value: .gov, ignore_case: true}
              - name: Office hours
                op: time_of_day
                from: "09:00"
                to: "17:00"
                time_zone: America/Chicago
              - {op: day_of_week, value: [mon, tue, wed, thu, fri], time_zone: America/Chicago}
              - {field: lead.dob, op: before, value: 2006-01-01}
              - {field: lead.consent_at, op: newer_than, days: 30}
              - {field: lead.email, op: regex, value: '@example\\.com$'}
            """
        )
    )
    rules = filter_of(flow).settings
    monday_10am_chicago = 1_705_334_400_000  # 2024-01-15T16:00Z
    lead = {
        "submission.timestamp": monday_10am_chicago,
        "lead.state": "WY",
        "lead.age": 30.0,
        "lead.email": "ada@example.com",
        "lead.email.domain": "example.com",
        "lead.dob": "1990-05-01",
        "lead.consent_at": "2024-01-10T00:00:00.000Z",
    }
    assert evaluate_filter(lead, rules, "rules").proceed
    late = {**lead, "submission.timestamp": monday_10am_chicago + 8 * 3_600_000}
    assert evaluate_filter(late, rules, "rules").last.reason == (
        f"Office hours: submission.timestamp is {monday_10am_chicago + 8 * 3_600_000} "
        "(Mon 2024-01-15 18:00 CST)"
    )


def test_an_unquoted_yaml_date_is_the_same_date_as_text() -> None:
    flow = parse_flow(flow_with("rules: [{field: lead.moved_on, op: equals, value: 2024-01-15}]"))
    rules = filter_of(flow).settings
    assert evaluate_filter({"lead.moved_on": "2024-01-15"}, rules, "rules").proceed


def test_the_demo_flow_filters_as_before() -> None:
    flow = load_flow(DEMO)
    rules = filter_of(flow).settings
    lead = {"lead.state": "TX", "lead.tcpa_consent": True}
    assert evaluate_filter(lead, rules, "service-area").proceed
    wyoming = evaluate_filter({**lead, "lead.state": "WY"}, rules, "service-area")
    assert wyoming.last.reason == "Service area: lead.state is 'WY'"
    no_consent = evaluate_filter({**lead, "lead.tcpa_consent": False}, rules, "service-area")
    assert no_consent.last.reason == "Consent given: lead.tcpa_consent is False"


def test_a_dumped_flow_loads_again() -> None:
    # The flow registry publishes flow.model_dump(mode="json") and validates it back.
    text = flow_with(
        """
        rules:
          - not: {op: time_of_day, from: "22:00", to: "06:00", time_zone: UTC}
          - {field: lead.age, op: range, min: 18}
        """
    )
    flow = parse_flow(text)
    assert Flow.model_validate(flow.model_dump(mode="json")) == flow


REFUSED = [
    # (rules, where, what)
    ("[{field: lead.x, op: bogus}]", "rules.0.op", "Input should be 'equals'"),
    ("[{field: lead.x, op: regex, value: '(('}]", "rules.0", "pattern '((' is not one RE2"),
    # Backtracking-only syntax: RE2 runs in linear time and cannot express it.
    (r"[{field: lead.x, op: regex, value: '(a)\1'}]", "rules.0", "RE2"),
    ("[{field: lead.x, op: regex, value: '(?<=a)b'}]", "rules.0", "invalid perl operator"),
    ("[{field: lead.x, op: regex, value: [a]}]", "rules.0", "needs a pattern string"),
    ("[{field: lead.x, op: in, value: TX}]", "rules.0", "op 'in' needs a list 'value'"),
    ("[{field: lead.x, op: in, value: [a, {b: 1}]}]", "rules.0", "got dict"),
    ("[{field: lead.x, op: in, value: [a, null]}]", "rules.0", "use exists / not_exists"),
    ("[{field: lead.x, op: in, value: [.inf]}]", "rules.0", "finite numbers or booleans, got inf"),
    ("[{field: lead.x, op: equals}]", "rules.0", "op 'equals' needs 'value'"),
    ("[{field: lead.x, op: equals, value: null}]", "rules.0", "op 'equals' needs 'value'"),
    ("[{field: lead.x, op: equals, value: 3, min: 2}]", "rules.0", "does not take 'min'"),
    ("[{field: lead.x, op: exists, value: 1}]", "rules.0", "op 'exists' does not take 'value'"),
    ("[{field: lead.x, op: gte, value: '18'}]", "rules.0", "needs a number as 'value'"),
    ("[{field: lead.x, op: range}]", "rules.0", "needs 'min' and/or 'max'"),
    ("[{field: lead.x, op: range, min: 65, max: 18}]", "rules.0", "min 65 is greater than max 18"),
    ("[{field: lead.x, op: range, min: true}]", "rules.0.min", "valid number"),
    ("[{field: lead.x, op: range, min: .nan}]", "rules.0.min", "finite number"),
    ("[{field: lead.x, op: contains, value: ''}]", "rules.0", "needs non-empty text"),
    ("[{field: lead.x, op: gte, value: 1, ignore_case: true}]", "rules.0", "'ignore_case'"),
    ("[{op: exists}]", "rules.0", "op 'exists' needs 'field'"),
    ("[{field: lead.x}]", "rules.0", "a rule needs 'op' and 'field'"),
    ("[{field: lead.x, op: exists, colour: red}]", "rules.0.colour", "Extra inputs"),
    ("[{any: []}]", "rules.0", "'any' needs at least one rule"),
    ("[{all: [{field: a, op: exists}], field: b}]", "rules.0", "not both: got all, field"),
    ("[{all: [{field: a, op: exists}], not: {field: a, op: exists}}]", "rules.0", "not both"),
    ("[{not: [{field: a, op: exists}]}]", "rules.0.not", "valid dictionary"),
    ("[{any: [{all: [{field: a, op: nope}]}]}]", "rules.0.any.0.all.0.op", "Input should be"),
    ("[{field: lead.x, op: time_of_day, from: '09:00', to: '17:00'}]", "rules.0", "'time_zone'"),
    (
        "[{op: time_of_day, from: '09:00', to: '17:00', time_zone: Mars/Base}]",
        "rules.0.time_zone",
        "unknown time zone 'Mars/Base'",
    ),
    (
        "[{op: time_of_day, from: 09:00, to: 17:00, time_zone: UTC}]",
        "rules.0.to",
        "YAML reads an unquoted 17:00 as the number 1020; write times in quotes, e.g. '17:00'",
    ),
    (
        "[{op: time_of_day, from: '9am', to: '17:00', time_zone: UTC}]",
        "rules.0.from",
        "expected a time as HH:MM",
    ),
    (
        "[{op: time_of_day, from: '09:00', to: '09:00', time_zone: UTC}]",
        "rules.0",
        "'from' and 'to' are both 09:00",
    ),
    (
        "[{op: day_of_week, value: [mon, funday], time_zone: UTC}]",
        "rules.0",
        "'funday' is not a day",
    ),
    ("[{op: day_of_week, value: mon, time_zone: UTC}]", "rules.0", "needs a list of days"),
    ("[{field: lead.x, op: before, value: '2024-02-30'}]", "rules.0", "needs a date as 'value'"),
    ("[{field: lead.x, op: after, value: 2024-01-01T10:00:00Z}]", "rules.0", "(YYYY-MM-DD)"),
    ("[{field: lead.x, op: older_than, days: -1}]", "rules.0.days", "greater than or equal to 0"),
    ("[{field: lead.x, op: older_than}]", "rules.0", "op 'older_than' needs 'days'"),
    ("[]", "rules", "at least 1 item"),
]


@pytest.mark.parametrize(("rules", "where", "what"), REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_rules_are_refused_at_load(rules: str, where: str, what: str) -> None:
    text = flow_with(f"rules: {rules}")
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(text, "flow.yaml")
    [problem] = exc.value.problems
    assert problem.startswith(f"line 13: steps.1.filter.settings.{where}: ")
    assert what in problem
    assert "flow.yaml" in str(exc.value)


def test_a_nested_mistake_points_at_its_own_line() -> None:
    text = flow_with(
        """
        rules:
          - any:
              - {field: lead.age, op: gte, value: 18}
              - {field: lead.age, op: regex, value: '[unclosed'}
        """
    )
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "unclosed" in row)
    assert exc.value.problems[0].startswith(f"line {line}: steps.1.filter.settings.rules.0.any.1:")


def test_every_mistake_is_reported_at_once() -> None:
    text = flow_with("rules: [{field: a, op: bogus}, {field: b, op: in, value: x}]")
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(text)
    assert len(exc.value.problems) == 2


# --- acceptance criteria on a source ---------------------------------------------

SOURCE_FLOW = """\
id: f
name: F
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields:
        - {name: age, type: number, required: true}
        - {name: phone_1, type: phone}
      acceptance:
        rules: [{rules}]
"""


def test_acceptance_criteria_load_on_a_source() -> None:
    text = SOURCE_FLOW.replace(
        "{rules}",
        "{name: Adult, field: lead.age, op: gte, value: 18}, "
        "{field: lead.phone_1.is_tollfree, op: not_equals, value: true}, "
        "{op: time_of_day, from: '08:00', to: '20:00', time_zone: America/Chicago}",
    )
    step = parse_flow(text).steps[0]
    assert isinstance(step, SourceStep) and step.settings.acceptance is not None


@pytest.mark.parametrize(
    ("rule", "unknown"),
    [
        ("{field: lead.agee, op: gte, value: 18}", "lead.agee"),
        ("{field: lead.phone_1.carrier, op: exists}", "lead.phone_1.carrier"),
        ("{field: appended.check.score, op: gte, value: 1}", "appended.check.score"),
        ("{not: {field: age, op: exists}}", "age"),
    ],
)
def test_acceptance_rules_on_fields_the_source_never_sets_are_refused(
    rule: str, unknown: str
) -> None:
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(SOURCE_FLOW.replace("{rules}", rule))
    [problem] = exc.value.problems
    assert problem.startswith("line 12: steps.0.source.settings.acceptance: ")
    assert f"acceptance rules read {unknown}, which this source never sets" in problem


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            "[{name: email}, {name: email, type: email}]",
            "field names must be unique, repeated: email",
        ),
        ("[{name: id}]", "'id' is reserved"),
        ("[{name: email.valid}]", "String should match pattern"),
        ("[{name: x, type: passport}]", "Input should be 'string'"),
    ],
)
def test_source_fields_that_would_collide_are_refused(fields: str, message: str) -> None:
    text = SOURCE_FLOW.replace(
        "      fields:\n        - {name: age, type: number, required: true}\n"
        "        - {name: phone_1, type: phone}\n      acceptance:\n        rules: [{rules}]\n",
        f"      fields: {fields}\n",
    )
    with pytest.raises(FlowConfigError, match=message):
        parse_flow(text)
