"""Alert rules in a flow: what ``flow apply`` refuses, and what an alert's change owes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.alerts.actions import actions_for, lowered_maximum
from engine.alerts.evaluation import FlowAlerts
from engine.alerts.rules import AlertRule
from engine.caps import CapSpec
from engine.errors import FlowConfigError
from engine.flows import parse_flow
from tests.engine.alerts.support import CAPPED_SOURCE_FLOW, alert_rule

FLOW = (
    CAPPED_SOURCE_FLOW
    + """  - id: premier
    kind: recipient
    name: Premier
    settings: {url: "http://127.0.0.1:9/leads"}
alerts:
"""
)


def test_rules_from_the_seed_are_accepted() -> None:
    flow = parse_flow(
        FLOW
        + """
  - {id: rejections, metric: rejection_rate, above: 30, resolve: 20}
  - {id: slow, metric: avg_step_ms, above: 2000}
  - {id: bad-source, metric: source_rejection_rate, above: 50, lower_source_cap: {factor: 0.5}}
  - {id: buyers, metric: buyer_acceptance, below: 70, steps: [premier],
     webhook: {url: "https://hooks.example.com/x", auth: {kind: bearer, secret_env: HOOK_KEY}}}
"""
    )
    assert [r.id for r in flow.alerts] == ["rejections", "slow", "bad-source", "buyers"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{id: a, metric: buyer_acceptance, below: 70, steps: [source]}", "source is source"),
        ("{id: a, metric: avg_step_ms, above: 1, steps: [nope]}", "nope is no step"),
        ("{id: a, metric: rejection_rate, above: 30, below: 10}", "exactly one of above or below"),
        ("{id: a, metric: rejection_rate, above: 30, resolve: 40}", "at or below above"),
        ("{id: a, metric: buyer_acceptance, below: 70, resolve: 60}", "at or above below"),
        (
            "{id: a, metric: rejection_rate, above: 3, lower_source_cap: {}}",
            "source_rejection_rate only",
        ),
        (
            "{id: a, metric: rejection_rate, above: 3, webhook: {url: 'https://u:p@h.example.com'}}",
            "credentials in the URL",
        ),
    ],
)
def test_what_apply_refuses(rule: str, message: str) -> None:
    with pytest.raises(FlowConfigError, match=message):
        parse_flow(FLOW + f"  - {rule}\n")


def test_lowering_a_cap_needs_one_on_the_source() -> None:
    text = FLOW.replace(
        "      caps: [{maximum: 100, duration: day}, {maximum: 7, duration: hour}]\n", ""
    )
    with pytest.raises(FlowConfigError, match="needs caps on the source"):
        parse_flow(
            text + "  - {id: a, metric: source_rejection_rate, above: 50, lower_source_cap: {}}\n"
        )


def test_repeated_rule_ids_are_refused() -> None:
    with pytest.raises(FlowConfigError, match="alert ids must be unique"):
        parse_flow(
            FLOW
            + "  - {id: a, metric: rejection_rate, above: 3}\n"
            + "  - {id: a, metric: rejection_rate, above: 4}\n"
        )


def test_lowered_maximum_rounds_down_and_keeps_the_floor() -> None:
    assert lowered_maximum(100, 0.5, 1) == 50
    assert lowered_maximum(7, 0.5, 1) == 3
    assert lowered_maximum(3, 0.5, 5) == 3  # never raised to the floor
    assert lowered_maximum(1, 0.5, 1) == 1


NOW = 1_800_000_000_000


def _source_rejections(rule: AlertRule) -> FlowAlerts:
    """The rule's alerts after ten leads rejected at the source, all in the window at NOW."""
    alerts = FlowAlerts("solar", [rule])
    for i in range(10):
        alerts.observe(
            {
                "type": "source.rejected",
                "step_id": "source",
                "timestamp": NOW - 1,
                "lead_id": f"L{i}",
                "reason": "Missing required field: email",
            },
            NOW,
        )
    return alerts


def test_a_triggered_source_alert_owes_a_webhook_and_the_lowered_caps() -> None:
    rule = alert_rule(
        "{id: bad, metric: source_rejection_rate, above: 50,"
        " lower_source_cap: {factor: 0.5, minimum: 2},"
        " webhook: {url: 'https://hooks.example.com/x',"
        " auth: {kind: bearer, secret_env: HOOK_KEY}}}"
    )
    (change,) = _source_rejections(rule).evaluate(NOW)
    caps = [CapSpec(maximum=100), CapSpec(maximum=3, duration="hour")]
    webhook, lower = actions_for(change, caps)
    assert webhook.kind == "webhook"
    assert webhook.payload["webhook"]["auth"] == {
        "kind": "bearer",
        "header": "Authorization",
        "username": None,
        "secret_env": "HOOK_KEY",
        "secret_file": None,
    }
    assert webhook.payload["body"]["type"] == "alert.triggered"
    assert lower.kind == "lower_source_cap"
    assert lower.payload["caps"] == [
        {"index": 0, "from": 100, "to": 50},
        {"index": 1, "from": 3, "to": 2},
    ]
    assert lower.payload["reason"].startswith(f"alert bad ({change.alert_id}): ")


def test_a_resolution_owes_the_webhook_only() -> None:
    rule = alert_rule(
        "{id: bad, metric: source_rejection_rate, above: 50, min_events: 5,"
        " lower_source_cap: {factor: 0.5}, webhook: {url: 'https://hooks.example.com/x'}}"
    )
    alerts = _source_rejections(rule)
    assert [c.transition for c in alerts.evaluate(NOW)] == ["triggered"]
    (resolved,) = alerts.evaluate(NOW + 2 * 3_600_000)
    assert resolved.transition == "resolved"
    assert [d.kind for d in actions_for(resolved, [CapSpec(maximum=10)])] == ["webhook"]


def test_the_readme_example_is_a_valid_alerts_section() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Alerts and automated responses", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    flow = parse_flow(FLOW.removesuffix("alerts:\n") + example)
    assert [r.id for r in flow.alerts] == ["rejections", "slow-steps", "bad-source", "buyers"]
