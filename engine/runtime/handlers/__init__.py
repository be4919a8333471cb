"""Step handlers, one module per step kind, and the registry that picks one for a step."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from engine.flows import Flow, Step
from engine.runtime.handlers.base import (
    Headers,
    PoisonMessageError,
    Record,
    StepHandler,
    header_map,
    now_ms,
)
from engine.runtime.handlers.enhancement import enhancement_handler
from engine.runtime.handlers.filter import FilterHandler
from engine.runtime.handlers.recipient import RecipientHandler
from engine.runtime.handlers.source import SourceHandler
from schemas.codec import EventCodec

__all__ = [
    "Headers",
    "PoisonMessageError",
    "Record",
    "StepHandler",
    "header_map",
    "make_handler",
    "now_ms",
]


def _recipient(flow: Flow, step: Step, host: str, codec: EventCodec) -> StepHandler:
    return RecipientHandler(flow, step, host, codec, httpx.Client())  # type: ignore[arg-type]


# Step kind -> handler factory. A new step kind adds its module and one line here.
FACTORIES: dict[str, Callable[[Flow, Step, str, EventCodec], StepHandler]] = {
    "source": SourceHandler,  # type: ignore[dict-item]
    "filter": FilterHandler,  # type: ignore[dict-item]
    "recipient": _recipient,
    "enhancement": enhancement_handler,
}


def make_handler(flow: Flow, step_id: str, host: str, codec: EventCodec) -> StepHandler:
    step = flow.step(step_id)
    return FACTORIES[step.kind](flow, step, host, codec)
