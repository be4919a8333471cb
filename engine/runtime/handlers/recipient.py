"""The recipient step's I/O: POST the lead to the buyer, then judge the answer.

With caps, a slot is reserved before the POST (keyed by lead id, so a re-run
after a crash finds its own), then confirmed or released; what a full cap or
the buyer's answer means for the lead and its slot is ``engine.steps.recipient``'s.
"""

from __future__ import annotations

import httpx

from engine.events import LeadEvent
from engine.flows import Flow, RecipientStep
from engine.ids import event_id
from engine.runtime.handlers.base import EventInputHandler
from engine.runtime.http_calls import post
from engine.settings import get_settings
from engine.state.store import StateStore
from engine.steps.base import Snapshot, StepResult
from engine.steps.cap_checks import CapCheck
from engine.steps.recipient import (
    build_delivery,
    cap_full,
    judge_delivery,
    recipient_caps,
    submitted_at,
    within_caps,
)
from schemas.codec import EventCodec


class RecipientHandler(EventInputHandler):
    def __init__(
        self,
        flow: Flow,
        step: RecipientStep,
        host: str,
        codec: EventCodec,
        http: httpx.Client,
        state: StateStore | None = None,
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        self.http = http
        if state is None and step.settings.caps:
            # The process settings' database: a capped step never runs uncounted.
            state = StateStore(get_settings())
        self.state = state

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        lead_id: str = event["lead_id"]
        settings = self.step.settings
        checks = recipient_caps(self.flow.id, self.step.id, settings, lead_id, snapshot)
        if self.state is None or not checks:
            return self._deliver(lead_id, snapshot)
        return self._deliver_within_caps(self.state, checks, lead_id, snapshot)

    def _deliver_within_caps(
        self, state: StateStore, checks: list[CapCheck], lead_id: str, snapshot: Snapshot
    ) -> StepResult:
        """Reserve, deliver, then confirm or release as ``engine.steps.recipient`` says. A
        ``StateUnavailableError`` from any of the three aborts the worker's transaction and
        the lead is re-run: it finds its own reservation, so it is delivered (with the same
        idempotency key) and counted once."""
        full = state.reserve(lead_id, checks)
        if full is not None:
            return cap_full(self.step.id, full)
        try:
            capped = within_caps(self._deliver(lead_id, snapshot))
        except Exception:
            state.release(lead_id, checks)  # a bug mid-delivery must not hold a slot
            raise
        if capped.keep_slots:
            state.confirm(lead_id, checks)
        else:
            state.release(lead_id, checks)
        return capped.result

    def _deliver(self, lead_id: str, snapshot: Snapshot) -> StepResult:
        settings = self.step.settings
        # The id this step's first event will get: the buyer's idempotency key.
        key = event_id(lead_id, submitted_at(lead_id, snapshot), self.index, 0)
        delivery = build_delivery(snapshot, settings, key)
        answer = post(self.http, delivery, settings.timeout_ms, "Buyer")
        return judge_delivery(snapshot, settings, self.step.id, delivery, answer)

    def close(self) -> None:
        self.http.close()
        if self.state is not None:
            self.state.close()
