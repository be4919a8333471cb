"""A source's caps lowered as a new flow: to the targets fixed at the trigger, once."""

from __future__ import annotations

from engine.flows import parse_flow
from engine.runtime.alerting.source_caps import with_lowered_caps
from tests.engine.alerts.support import CAPPED_SOURCE_FLOW

FLOW = parse_flow(CAPPED_SOURCE_FLOW)
TARGETS = [{"index": 0, "from": 100, "to": 50}, {"index": 1, "from": 7, "to": 3}]


def test_caps_go_to_their_targets() -> None:
    lowered = with_lowered_caps(FLOW, "source", TARGETS)
    assert lowered is not None
    assert [c.maximum for c in lowered.steps[0].settings.caps] == [50, 3]  # type: ignore[union-attr]
    assert lowered.steps[0].settings.caps[1].duration == "hour"  # type: ignore[union-attr]


def test_applying_the_same_action_again_changes_nothing() -> None:
    lowered = with_lowered_caps(FLOW, "source", TARGETS)
    assert lowered is not None
    assert with_lowered_caps(lowered, "source", TARGETS) is None


def test_a_cap_already_lower_stays() -> None:
    lowered = with_lowered_caps(FLOW, "source", [{"index": 0, "from": 100, "to": 500}])
    assert lowered is None
