"""Handlers of steps that call a service (a buyer, an enhancement): plan, call, judge.

The step plans the call and judges the answer (pure functions of
``engine.steps``); the handler's ``CallRunner`` makes the call
(``engine.runtime.calls``). Around the call a handler may do the I/O its
step needs: ``prepare`` before it (e.g. reserving a cap slot, which the plan
depends on), ``conclude`` after the judgement (confirming the slot) and
``abandon`` when the call or the judgement fails unexpectedly (giving the slot
back). The four are per lead and ``judge`` is pure, so a runner that makes many
calls at once can drive them without a step or a hook changing.
"""

from __future__ import annotations

from engine.events import LeadEvent
from engine.flows import Flow
from engine.runtime.calls import CallRunner
from engine.runtime.handlers.base import Asking, EventInputHandler
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from schemas.codec import EventCodec


class CallingHandler(EventInputHandler):
    def __init__(
        self,
        flow: Flow,
        step_id: str,
        host: str,
        codec: EventCodec,
        calls: CallRunner,
        *,
        owns_calls: bool = True,
    ) -> None:
        super().__init__(flow, step_id, host, codec)
        self.calls = calls
        # A runner shared by the worker's handlers outlives each of them.
        self.owns_calls = owns_calls

    def plan(self, event: LeadEvent, snapshot: Snapshot) -> StepResult | Asking:
        lead_id: str = event["lead_id"]
        planned = self.prepare(lead_id, snapshot)
        if isinstance(planned, StepResult):
            return planned  # the step needs no call (e.g. its cap is full)

        def then(answers: list[Answer]) -> StepResult:
            try:
                result = self.judge(snapshot, planned, answers[0])
            except Exception:
                self.abandon(lead_id, snapshot)  # a bug mid-call must not keep what was held
                raise
            return self.conclude(lead_id, snapshot, result)

        return Asking([planned], then, abandon=lambda: self.abandon(lead_id, snapshot))

    def call(self, call: Call) -> Answer:
        return self.calls.run(call)

    def prepare(self, lead_id: str, snapshot: Snapshot) -> Call | StepResult:
        """The step's plan for the lead, after any I/O the plan needs."""
        raise NotImplementedError

    def judge(self, snapshot: Snapshot, call: Call, answer: Answer) -> StepResult:
        """The step's judgement of the answer to ``call``."""
        raise NotImplementedError

    def conclude(self, lead_id: str, snapshot: Snapshot, result: StepResult) -> StepResult:
        """The I/O the judged ``result`` asks for; none by default."""
        return result

    def abandon(self, lead_id: str, snapshot: Snapshot) -> None:
        """Undo what ``prepare`` held when the call or its judgement failed; nothing by default."""

    def close(self) -> None:
        super().close()
        if self.owns_calls:
            self.calls.close()
