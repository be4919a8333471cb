"""What the alert tests share: a flow with a capped source, and rules written as a flow
file writes them, so each test states only the rule and events that it is about."""

from __future__ import annotations

import yaml

from engine.alerts.rules import AlertRule

# The caps are what a source_rejection_rate alert lowers; the ``alerts:`` of a test's flow
# (and any more steps) follow.
CAPPED_SOURCE_FLOW = """
id: solar
name: Solar
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields: [{name: email, type: email}]
      caps: [{maximum: 100, duration: day}, {maximum: 7, duration: hour}]
"""


def alert_rule(entry: str) -> AlertRule:
    """One entry of a flow's ``alerts:``, in the flow file's YAML: ``{id: r, metric: …}``."""
    return AlertRule.model_validate(yaml.safe_load(entry))
