"""The recipient step's I/O: POST the lead to the buyer, then judge the answer.

With caps, a slot is reserved before the POST (keyed by lead id, so a re-run
after a crash finds its own), confirmed when the buyer took the lead and
released otherwise. At a full cap the buyer is not called at all: the lead
gets ``recipient.failed`` with ``cap_reached`` and goes on.
"""

from __future__ import annotations

import httpx

from engine.events import LeadEvent
from engine.flows import Flow, RecipientStep
from engine.ids import event_id, id_timestamp_ms
from engine.runtime.handlers.base import EventInputHandler
from engine.runtime.http_calls import post
from engine.settings import get_settings
from engine.state.store import StateStore
from engine.steps.base import EventDraft, Snapshot, StepResult
from engine.steps.cap_checks import CapCheck, cap_checks, recipient_cap_reason, recipient_scope
from engine.steps.recipient import build_delivery, judge_delivery
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
        self.scope = recipient_scope(flow.id, step.id)
        if state is None and step.settings.caps:
            # The process settings' database: a capped step never runs uncounted.
            state = StateStore(get_settings())
        self.state = state

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        lead_id: str = event["lead_id"]
        submitted = snapshot.get("submission.timestamp")
        # The cap window comes from the submission time, never the clock, so
        # a retry or a replay lands in the same window as the first run.
        submitted_ms = submitted if isinstance(submitted, int) else id_timestamp_ms(lead_id)
        if self.state is None or not self.step.settings.caps:
            return self._deliver(lead_id, submitted_ms, snapshot)
        return self._deliver_within_caps(self.state, lead_id, submitted_ms, snapshot)

    def _deliver_within_caps(
        self, state: StateStore, lead_id: str, submitted_ms: int, snapshot: Snapshot
    ) -> StepResult:
        """Reserve, deliver, then confirm or release. A ``StateUnavailableError`` from
        any of the three aborts the worker's transaction and the lead is re-run: it
        finds its own reservation, so it is delivered (with the same idempotency
        key) and counted once."""
        checks: list[CapCheck] = cap_checks(self.scope, self.step.settings.caps, submitted_ms)
        full = state.reserve(lead_id, checks)
        if full is not None:
            capped = EventDraft(
                "recipient.failed",
                "failure",
                recipient_cap_reason(full),
                entity_id=self.step.id,
                revenue=0.0,
                cap_reached=True,
            )
            return StepResult([capped], proceed=True)
        try:
            result = self._deliver(lead_id, submitted_ms, snapshot)
        except Exception:
            state.release(lead_id, checks)  # a bug mid-delivery must not hold a slot
            raise
        if any(d.type == "recipient.delivered" for d in result.events):
            state.confirm(lead_id, checks)
        else:
            state.release(lead_id, checks)  # refused or failed: only delivered leads count
        for draft in result.events:
            draft.cap_reached = False
        return result

    def _deliver(self, lead_id: str, submitted_ms: int, snapshot: Snapshot) -> StepResult:
        settings = self.step.settings
        # The id this step's first event will get: the buyer's idempotency key.
        key = event_id(lead_id, submitted_ms, self.index, 0)
        delivery = build_delivery(snapshot, settings, key)
        answer = post(self.http, delivery, settings.timeout_ms, "Buyer")
        return judge_delivery(snapshot, settings, self.step.id, delivery, answer)

    def close(self) -> None:
        self.http.close()
        if self.state is not None:
            self.state.close()
