"""The recipient step's I/O: POST the lead to the buyer, then judge the answer."""

from __future__ import annotations

import httpx

from engine.events import LeadEvent
from engine.flows import Flow, RecipientStep
from engine.ids import event_id
from engine.runtime.handlers.base import EventInputHandler
from engine.runtime.http_calls import post
from engine.steps.base import Snapshot, StepResult
from engine.steps.recipient import build_delivery, judge_delivery
from schemas.codec import EventCodec


class RecipientHandler(EventInputHandler):
    def __init__(
        self, flow: Flow, step: RecipientStep, host: str, codec: EventCodec, http: httpx.Client
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        self.http = http

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        settings = self.step.settings
        # The id this step's first event will get: the buyer's idempotency key.
        key = event_id(
            event["lead_id"], int(snapshot.get("submission.timestamp") or 0), self.index, 0
        )
        delivery = build_delivery(snapshot, settings, key)
        answer = post(self.http, delivery, settings.timeout_ms, "Buyer")
        return judge_delivery(snapshot, settings, self.step.id, delivery, answer)

    def close(self) -> None:
        self.http.close()
