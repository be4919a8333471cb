"""The recipient step's I/O: the call the step plans, made by the runner, then judged.

With caps, a slot is reserved before the call (keyed by lead id, so a re-run
after a crash finds its own), then confirmed or released; what a full cap or
the buyer's answer means for the lead and its slot is ``engine.steps.recipient``'s.
A ``StateUnavailableError`` from any of the three aborts the worker's
transaction and the lead is re-run: it finds its own reservation, so it is
delivered (with the same idempotency key) and counted once.
"""

from __future__ import annotations

from engine.flows import Flow, RecipientStep
from engine.runtime.calls import CallRunner
from engine.runtime.handlers.calling import CallingHandler
from engine.settings import get_settings
from engine.state.store import StateStore
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from engine.steps.cap_checks import CapCheck
from engine.steps.recipient import judge_delivery, plan_delivery, recipient_caps, within_caps
from schemas.codec import EventCodec


class RecipientHandler(CallingHandler):
    def __init__(
        self,
        flow: Flow,
        step: RecipientStep,
        host: str,
        codec: EventCodec,
        calls: CallRunner,
        state: StateStore | None = None,
        *,
        owns_calls: bool = True,
    ) -> None:
        super().__init__(flow, step.id, host, codec, calls, owns_calls=owns_calls)
        self.step = step
        if state is None and step.settings.caps:
            # The process settings' database: a capped step never runs uncounted.
            state = StateStore(get_settings())
        self.state = state

    def _caps(self, lead_id: str, snapshot: Snapshot) -> list[CapCheck]:
        if self.state is None:
            return []
        return recipient_caps(self.flow.id, self.step.id, self.step.settings, lead_id, snapshot)

    def prepare(self, lead_id: str, snapshot: Snapshot) -> Call | StepResult:
        checks = self._caps(lead_id, snapshot)
        full = self.state.reserve(lead_id, checks) if self.state is not None and checks else None
        try:
            settings = self.step.settings
            return plan_delivery(lead_id, snapshot, settings, self.step.id, self.index, full)
        except Exception:
            self.abandon(lead_id, snapshot)
            raise

    def judge(self, snapshot: Snapshot, call: Call, answer: Answer) -> StepResult:
        settings = self.step.settings
        return judge_delivery(snapshot, settings, self.step.id, call.request, answer)

    def conclude(self, lead_id: str, snapshot: Snapshot, result: StepResult) -> StepResult:
        checks = self._caps(lead_id, snapshot)
        if self.state is None or not checks:
            return result
        capped = within_caps(result)
        if capped.keep_slots:
            self.state.confirm(lead_id, checks)
        else:
            self.state.release(lead_id, checks)
        return capped.result

    def abandon(self, lead_id: str, snapshot: Snapshot) -> None:
        checks = self._caps(lead_id, snapshot)
        if self.state is not None and checks:
            self.state.release(lead_id, checks)

    def close(self) -> None:
        super().close()
        if self.state is not None:
            self.state.close()
