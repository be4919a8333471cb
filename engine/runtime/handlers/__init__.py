"""Step handlers, one module per step kind, and the registry that picks one for a step."""

from __future__ import annotations

from collections.abc import Callable

from engine.flows import FilterStep, Flow, RecipientStep, SourceStep, Step
from engine.runtime.calls import call_runner
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
from engine.settings import Settings, get_settings
from engine.state.store import StateStore
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


def _source(flow: Flow, step: Step, host: str, codec: EventCodec, state: StateStore) -> StepHandler:
    assert isinstance(step, SourceStep)
    return SourceHandler(flow, step, host, codec, state)


def _filter(flow: Flow, step: Step, host: str, codec: EventCodec, _: StateStore) -> StepHandler:
    assert isinstance(step, FilterStep)
    return FilterHandler(flow, step, host, codec)


def _recipient(
    flow: Flow, step: Step, host: str, codec: EventCodec, state: StateStore
) -> StepHandler:
    assert isinstance(step, RecipientStep)
    return RecipientHandler(flow, step, host, codec, call_runner(), state)


def _enhancement(
    flow: Flow, step: Step, host: str, codec: EventCodec, _: StateStore
) -> StepHandler:
    return enhancement_handler(flow, step, host, codec)


# Step kind -> handler factory. A new step kind adds its module and one entry here.
# ``state`` holds the Postgres-backed counters (caps, duplicates): it connects
# lazily, only for steps whose settings use them.
FACTORIES: dict[str, Callable[[Flow, Step, str, EventCodec, StateStore], StepHandler]] = {
    "source": _source,
    "filter": _filter,
    "recipient": _recipient,
    "enhancement": _enhancement,
}


def make_handler(
    flow: Flow, step_id: str, host: str, codec: EventCodec, settings: Settings | None = None
) -> StepHandler:
    step = flow.step(step_id)
    state = StateStore(settings or get_settings())
    return FACTORIES[step.kind](flow, step, host, codec, state)
