"""What an alert's change of state owes, as data: webhook calls and a source's lowered cap.

Decided when the change is (and stored with it, in the same transaction), carried out
after by ``engine.runtime.alerting.actions``. A cap's new maximum is fixed here, from the
flow the evaluator judged with, so that carrying the action out twice (a crash between
the update and its bookkeeping) lowers the cap once, not by the factor squared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.alerts.evaluation import AlertChange
from engine.caps import CapSpec

ActionKind = Literal["webhook", "lower_source_cap"]


@dataclass(frozen=True, slots=True)
class ActionDraft:
    kind: ActionKind
    payload: dict[str, Any]


def lowered_maximum(maximum: int, factor: float, minimum: int) -> int:
    """``maximum`` times ``factor``, rounded down, never under ``minimum`` nor above itself."""
    return min(maximum, max(minimum, math.floor(maximum * factor)))


def actions_for(change: AlertChange, source_caps: Sequence[CapSpec]) -> list[ActionDraft]:
    """The actions ``change`` owes; ``source_caps``: the source step's caps as judged."""
    drafts = []
    rule = change.rule
    if rule.webhook is not None:
        # The webhook's settings go with the action: references to its secret only (an
        # environment variable's name, a file's path), which the runner reads when sending.
        drafts.append(
            ActionDraft(
                "webhook",
                {"webhook": rule.webhook.model_dump(mode="json"), "body": change.payload},
            )
        )
    response = rule.lower_source_cap
    if change.transition == "triggered" and response is not None:
        caps = [
            {
                "index": i,
                "from": cap.maximum,
                "to": lowered_maximum(cap.maximum, response.factor, response.minimum),
            }
            for i, cap in enumerate(source_caps)
        ]
        drafts.append(
            ActionDraft(
                "lower_source_cap",
                {
                    "flow_id": change.payload["flow_id"],
                    "source_step": change.subject,
                    "factor": response.factor,
                    "caps": caps,
                    "reason": f"alert {rule.id} ({change.alert_id}): {change.payload['summary']}",
                },
            )
        )
    return drafts
