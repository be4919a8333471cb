"""Flow definitions: valid ones load, invalid ones are refused with line and field."""

from pathlib import Path

import pytest

from engine.errors import FlowConfigError
from engine.flows import load_flow, parse_flow

DEMO = Path(__file__).parents[1] / "flows" / "basic.yaml"
DEMO_RUN = Path(__file__).parents[2] / "flows" / "demo.yaml"


def test_the_basic_flow_loads() -> None:
    flow = load_flow(DEMO)
    assert [s.kind for s in flow.steps] == ["source", "filter", "recipient"]
    assert {d.kind for d in flow.destinations} == {"s3", "azure_blob"}


def test_the_demo_flow_uses_every_step_kind() -> None:
    flow = load_flow(DEMO_RUN)
    assert [s.kind for s in flow.steps] == [
        "source",
        "enhancement",
        "filter",
        "recipient",
        "recipient",
    ]
    assert flow.stop_at_first_delivery


def test_the_demo_flow_seals_its_personal_fields() -> None:
    flow = load_flow(DEMO_RUN)
    assert flow.seals
    assert {"first_name", "last_name", "email", "phone_1", "postal_code"} <= flow.sensitive
    assert "state" not in flow.sensitive  # the filter's field stays clear, and is not personal


def test_the_auction_example_loads_with_its_buyers_ping_fields_and_caps() -> None:
    flow = load_flow(DEMO_RUN.with_name("auction.yaml"))
    assert [s.kind for s in flow.steps] == ["source", "filter", "auction"]
    auction = flow.step("auction").settings
    assert auction.bid_window_ms == 750  # type: ignore[union-attr]
    buyers = auction.buyers  # type: ignore[union-attr]
    assert [b.id for b in buyers] == ["premier", "summit", "apex"]
    assert all("email" not in b.ping_fields for b in buyers)
    assert buyers[0].caps[0].maximum == 500


def test_an_auction_ping_field_that_is_pii_points_at_its_line() -> None:
    path = DEMO_RUN.with_name("auction.yaml")
    text = path.read_text().replace("ping_fields: [state]", "ping_fields: [state, email]")
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(text, "auction.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "[state, email]" in row)
    assert exc.value.problems[0].startswith(f"line {line}: steps.2.auction.settings.buyers.2")
    assert "ping_fields may not carry PII: email" in exc.value.problems[0]


def test_errors_point_at_the_line_and_field() -> None:
    text = DEMO.read_text().replace("op: in,", "op: bogus,")
    with pytest.raises(FlowConfigError) as exc:
        parse_flow(text, "demo.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "bogus" in row)
    assert exc.value.problems[0].startswith(f"line {line}: steps.1.filter.settings.rules.0.op:")
    assert "demo.yaml" in str(exc.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("id: premier", "id: source"), "step ids must be unique, repeated: source"),
        (("timeout_ms: 5000", "timeout_ms: 0"), "greater than 0"),
        (("url: http://127.0.0.1:8765/leads", "url: not a url"), "URL"),
        (("op: in,", "op: regex,"), "needs a pattern string"),
        (("kind: s3", "kind: ftp"), "'s3' or 'azure_blob'"),
    ],
)
def test_bad_definitions_are_refused(change: tuple[str, str], message: str) -> None:
    text = DEMO.read_text().replace(*change, 1)
    with pytest.raises(FlowConfigError, match=message):
        parse_flow(text)


def test_the_first_step_must_be_the_source() -> None:
    text = """
id: f
name: F
steps:
  - {id: a, kind: filter, name: A, settings: {rules: [{field: x, op: exists}]}}
"""
    with pytest.raises(FlowConfigError, match="the first step must be the source"):
        parse_flow(text)


def test_unreadable_file() -> None:
    with pytest.raises(FlowConfigError, match="cannot read"):
        load_flow(Path("/nonexistent/flow.yaml"))


def test_not_yaml() -> None:
    with pytest.raises(FlowConfigError, match="not valid YAML"):
        parse_flow("steps: [", "x.yaml")
