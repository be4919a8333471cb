"""Step handlers, one module per step kind, and the registry that picks one for a step."""

from __future__ import annotations

from collections.abc import Callable

from engine.flows import AuctionStep, FilterStep, Flow, RecipientStep, SourceStep, Step
from engine.runtime.calls import CallRunner, call_runner
from engine.runtime.handlers.auction import AuctionHandler
from engine.runtime.handlers.base import (
    BaseHandler,
    EventInputHandler,
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
from engine.runtime.sealer import LeadSealer
from engine.settings import Settings, get_settings
from engine.state.store import StateStore
from schemas.codec import EventCodec

__all__ = [
    "Headers",
    "PoisonMessageError",
    "Record",
    "StepHandler",
    "fused_into",
    "header_map",
    "make_handler",
    "now_ms",
]


def _source(
    flow: Flow, step: Step, host: str, codec: EventCodec, state: StateStore, _: CallRunner | None
) -> StepHandler:
    assert isinstance(step, SourceStep)
    return SourceHandler(flow, step, host, codec, state)


def _filter(
    flow: Flow, step: Step, host: str, codec: EventCodec, _: StateStore, __: CallRunner | None
) -> StepHandler:
    assert isinstance(step, FilterStep)
    return FilterHandler(flow, step, host, codec)


def _recipient(
    flow: Flow,
    step: Step,
    host: str,
    codec: EventCodec,
    state: StateStore,
    calls: CallRunner | None,
) -> StepHandler:
    assert isinstance(step, RecipientStep)
    owned = calls is None
    runner = call_runner() if calls is None else calls
    return RecipientHandler(flow, step, host, codec, runner, state, owns_calls=owned)


def _auction(
    flow: Flow,
    step: Step,
    host: str,
    codec: EventCodec,
    state: StateStore,
    calls: CallRunner | None,
) -> StepHandler:
    assert isinstance(step, AuctionStep)
    owned = calls is None
    runner = call_runner() if calls is None else calls
    return AuctionHandler(flow, step, host, codec, runner, state, owns_calls=owned)


def _enhancement(
    flow: Flow, step: Step, host: str, codec: EventCodec, _: StateStore, calls: CallRunner | None
) -> StepHandler:
    return enhancement_handler(flow, step, host, codec, calls)


# Step kind -> handler factory. A new step kind adds its module and one entry here.
# ``state`` holds the Postgres-backed counters (caps, duplicates): it connects
# lazily, only for steps whose settings use them.
Factory = Callable[[Flow, Step, str, EventCodec, StateStore, CallRunner | None], StepHandler]
FACTORIES: dict[str, Factory] = {
    "source": _source,
    "filter": _filter,
    "recipient": _recipient,
    "enhancement": _enhancement,
    "auction": _auction,
}


# Kinds whose decision may run in the previous step's worker (``EventInputHandler.successor``):
# pure ones only - no calls to wait on, no counters, no retry topic of their own.
FUSABLE_KINDS = frozenset({"filter"})


def fused_into(flow: Flow, step_id: str, settings: Settings) -> str | None:
    """The step whose worker decides ``step_id``'s leads (its fused predecessor), or None.
    That step's own worker then only takes hand-offs written before the fusion."""
    index = flow.index(step_id)
    if not settings.fuse_pure_steps or index < 2 or flow.steps[index].kind not in FUSABLE_KINDS:
        return None  # the step after the source reads intake's hand-offs: never fused
    return flow.steps[index - 1].id


def make_handler(
    flow: Flow,
    step_id: str,
    host: str,
    codec: EventCodec,
    settings: Settings | None = None,
    calls: CallRunner | None = None,
) -> StepHandler:
    """The handler of ``step_id``. ``calls``: the runner a calling step's calls go to, shared
    by the worker's handlers (each flow version's) and closed by the worker, not by them;
    without one, a calling handler opens and closes its own."""
    step = flow.step(step_id)
    settings = settings or get_settings()
    # First: a sealing flow without a master key stops here, before anything is opened.
    sealer = LeadSealer.for_flow(flow, settings)
    state = StateStore(settings)
    handler = FACTORIES[step.kind](flow, step, host, codec, state, calls)
    if sealer is not None:
        assert isinstance(handler, BaseHandler)  # every step kind's handler is one
        handler.sealer = sealer
    following = flow.index(step_id) + 1
    if (
        settings.fuse_pure_steps
        and isinstance(handler, EventInputHandler)
        and following < len(flow.steps)
        and flow.steps[following].kind in FUSABLE_KINDS
    ):
        successor = make_handler(flow, flow.steps[following].id, host, codec, settings, calls)
        assert isinstance(successor, EventInputHandler)
        handler.successor = successor
    return handler
