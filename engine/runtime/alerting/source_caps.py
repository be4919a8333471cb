"""The seed's automated response to a bad source: its caps lowered, as a new flow version.

Recorded the way every flow change is (``apply_flow``: a ``flow.updated`` on the registry
topic, with the alert as its reason), so the source's workers follow it between
transactions like any other update, and the flow's history shows who changed the cap.
Each cap goes to the maximum fixed when the alert triggered, or stays where it is if it
is already lower: applying the same action twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from engine.flows import Flow, SourceStep
from engine.runtime.registry import apply_flow, read_flows
from engine.settings import Settings

log = structlog.get_logger(__name__)


def with_lowered_caps(flow: Flow, source_step: str, caps: Sequence[dict[str, Any]]) -> Flow | None:
    """``flow`` with the source's caps at most their targets; None if nothing changes."""
    step = flow.steps[0]
    if not isinstance(step, SourceStep) or step.id != source_step:
        return None
    current = list(step.settings.caps)
    changed = False
    for target in caps:
        index, maximum = int(target["index"]), int(target["to"])
        if index < len(current) and current[index].maximum > maximum:
            current[index] = current[index].model_copy(update={"maximum": maximum})
            changed = True
    if not changed:
        return None
    settings = step.settings.model_copy(update={"caps": current})
    steps = [step.model_copy(update={"settings": settings}), *flow.steps[1:]]
    # Validated again (model_copy does not): the flow that goes out is one apply accepts.
    return Flow.model_validate({**flow.model_dump(), "steps": [s.model_dump() for s in steps]})


def lower_source_cap(settings: Settings, payload: dict[str, Any]) -> int | None:
    """Carry out a ``lower_source_cap`` action; the flow's new version, or None if the flow
    is gone or its caps are already that low."""
    flow_id = str(payload["flow_id"])
    flow = next((f for f in read_flows(settings) if f.id == flow_id), None)
    if flow is None:
        log.warning("source cap not lowered: the flow is not applied", flow_id=flow_id)
        return None
    lowered = with_lowered_caps(flow, str(payload["source_step"]), payload["caps"])
    if lowered is None:
        return None
    result = apply_flow(settings, lowered, reason=str(payload["reason"]))
    log.info(
        "source cap lowered",
        flow_id=flow_id,
        version=result.flow.version,
        caps=payload["caps"],
        reason=payload["reason"],
    )
    return result.flow.version
