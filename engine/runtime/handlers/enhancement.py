"""The enhancement step's I/O: the call the step plans, made by the runner, then judged."""

from __future__ import annotations

from engine.flows import EnhancementStep, Flow, Step
from engine.runtime.calls import CallRunner, call_runner
from engine.runtime.handlers.calling import CallingHandler
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from engine.steps.enhancement import judge_enhancement, plan_enhancement
from schemas.codec import EventCodec


class EnhancementHandler(CallingHandler):
    def __init__(
        self,
        flow: Flow,
        step: EnhancementStep,
        host: str,
        codec: EventCodec,
        calls: CallRunner,
        *,
        owns_calls: bool = True,
    ) -> None:
        super().__init__(flow, step.id, host, codec, calls, owns_calls=owns_calls)
        self.step = step

    def prepare(self, lead_id: str, snapshot: Snapshot) -> Call:
        return plan_enhancement(lead_id, snapshot, self.step.settings, self.index)

    def judge(self, snapshot: Snapshot, call: Call, answer: Answer) -> StepResult:
        settings = self.step.settings
        return judge_enhancement(snapshot, settings, self.step.id, call.request, answer)


def enhancement_handler(
    flow: Flow, step: Step, host: str, codec: EventCodec, calls: CallRunner | None = None
) -> EnhancementHandler:
    """The registry's factory: an enhancement handler on the worker's shared runner, else
    with its own call runner (its own connection pool and event loop thread)."""
    if not isinstance(step, EnhancementStep):
        raise TypeError(f"step {step.id} is a {step.kind}, not an enhancement")
    if calls is None:
        return EnhancementHandler(flow, step, host, codec, call_runner())
    return EnhancementHandler(flow, step, host, codec, calls, owns_calls=False)
