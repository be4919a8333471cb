"""The filter step's I/O: nothing but the hand-off event in and the decision out."""

from __future__ import annotations

from engine.events import LeadEvent
from engine.flows import FilterStep, Flow
from engine.runtime.handlers.base import EventInputHandler
from engine.steps.base import Snapshot, StepResult
from engine.steps.filter import evaluate_filter
from schemas.codec import EventCodec


class FilterHandler(EventInputHandler):
    def __init__(self, flow: Flow, step: FilterStep, host: str, codec: EventCodec) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        after = flow.steps[self.index + 1 :]
        self.next_step_id = after[0].id if after else None

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        step = self.step
        return evaluate_filter(snapshot, step.settings, step.id, step.name, self.next_step_id)
