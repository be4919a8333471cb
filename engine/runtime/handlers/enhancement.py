"""The enhancement step's I/O: POST the mapped lead to the service, then judge the answer."""

from __future__ import annotations

import httpx

from engine.events import LeadEvent
from engine.flows import EnhancementStep, Flow, Step
from engine.ids import event_id
from engine.runtime.handlers.base import EventInputHandler
from engine.runtime.http_calls import post
from engine.steps.base import Snapshot, StepResult
from engine.steps.enhancement import build_request, judge_enhancement
from schemas.codec import EventCodec


class EnhancementHandler(EventInputHandler):
    def __init__(
        self, flow: Flow, step: EnhancementStep, host: str, codec: EventCodec, http: httpx.Client
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        self.http = http

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        settings = self.step.settings
        # The id this step's first event gets on its first attempt: the service's
        # idempotency key, the same on every retry of the lead at this step.
        key = event_id(
            event["lead_id"], int(snapshot.get("submission.timestamp") or 0), self.index, 0
        )
        request = build_request(snapshot, settings, key)
        # "Service timeout after 5000ms", as LeadConduit words it.
        answer = post(self.http, request, settings.timeout_ms, "Service")
        return judge_enhancement(snapshot, settings, self.step.id, request, answer)

    def close(self) -> None:
        self.http.close()


def enhancement_handler(flow: Flow, step: Step, host: str, codec: EventCodec) -> EnhancementHandler:
    """The registry's factory: an enhancement handler with its own HTTP connection pool."""
    if not isinstance(step, EnhancementStep):
        raise TypeError(f"step {step.id} is a {step.kind}, not an enhancement")
    return EnhancementHandler(flow, step, host, codec, httpx.Client())
