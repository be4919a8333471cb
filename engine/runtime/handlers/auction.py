"""The auction step's I/O: cap slots, then the pings at once, then posts one by one.

What the pings and posts mean is ``engine.steps.auction``'s; this module holds
the slots and hands the calls to the runner as ``Asking`` rounds: the pings
together within the bid window, then one post at a time (the next only after
the previous is refused). The concurrent loop makes the calls outside any
transaction and commits the lead's events, with its offset, only once the
auction has ended, so a crash mid-auction re-runs the whole auction: its posts
carry the same idempotency keys (lead, step, buyer), and a buyer that honours
them takes the lead once.

Caps stay exact: a slot is reserved in each capped buyer's caps before the
pings (keyed by lead id, so a re-run finds its own), so a buyer at its cap is
not even pinged; the slots of buyers that did not bid are given back once the
bids are in, the winner's is confirmed and the rest released when the auction
ends. Holding the bidders' slots until then costs a full buyer a few hundred
milliseconds of a slot it may not keep; it is what makes a fallback post exact.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.events import LeadEvent
from engine.flows import AuctionStep, Flow
from engine.runtime.calls import CallRunner
from engine.runtime.handlers.base import Asking, EventInputHandler
from engine.settings import get_settings
from engine.state.store import StateStore
from engine.steps.auction import (
    Auction,
    AuctionBuyer,
    Post,
    auction_caps,
    judge_pings,
    judge_post,
    next_post,
    open_auction,
    ping_round_ms,
    winner,
)
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from engine.steps.cap_checks import CapCheck, CapCount
from schemas.codec import EventCodec


class AuctionHandler(EventInputHandler):
    def __init__(
        self,
        flow: Flow,
        step: AuctionStep,
        host: str,
        codec: EventCodec,
        calls: CallRunner,
        state: StateStore | None = None,
        *,
        owns_calls: bool = True,
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        self.calls = calls
        self.owns_calls = owns_calls
        if state is None and any(b.caps for b in step.settings.buyers):
            # The process settings' database: a capped buyer is never delivered uncounted.
            state = StateStore(get_settings())
        self.state = state

    def _caps(self, lead_id: str, snapshot: Snapshot, buyer: AuctionBuyer) -> list[CapCheck]:
        if self.state is None or not buyer.caps:
            return []
        return auction_caps(self.flow.id, self.step.id, buyer, lead_id, snapshot)

    def _release(self, lead_id: str, snapshot: Snapshot, buyers: list[AuctionBuyer]) -> None:
        for buyer in buyers:
            checks = self._caps(lead_id, snapshot, buyer)
            if self.state is not None and checks:
                self.state.release(lead_id, checks)

    def plan(self, event: LeadEvent, snapshot: Snapshot) -> StepResult | Asking:
        lead_id: str = event["lead_id"]
        settings, step_id = self.step.settings, self.step.id
        buyers = settings.buyers
        full: dict[str, CapCount] = {}
        try:
            for buyer in buyers:
                checks = self._caps(lead_id, snapshot, buyer)
                capped = (
                    self.state.reserve(lead_id, checks)
                    if self.state is not None and checks
                    else None
                )
                if capped is not None:
                    full[buyer.id] = capped
            opening = open_auction(lead_id, snapshot, settings, self.index, full)
        except Exception:
            self._release(lead_id, snapshot, buyers)  # nothing held survives a failed plan
            raise

        def abandon() -> None:
            self._release(lead_id, snapshot, buyers)

        def after_pings(answers: list[Answer]) -> StepResult | Asking:
            auction = judge_pings(step_id, settings, opening, answers)
            bidders = {b.buyer.id for b in auction.bids}
            self._release(lead_id, snapshot, [b for b in buyers if b.id not in bidders])
            return self._go_on(lead_id, snapshot, auction, abandon)

        if not opening.pings:
            return after_pings([])
        calls = [p.call for p in opening.pings]
        return Asking(calls, after_pings, window_ms=ping_round_ms(settings), abandon=abandon)

    def _go_on(
        self, lead_id: str, snapshot: Snapshot, auction: Auction, abandon: Callable[[], None]
    ) -> StepResult | Asking:
        """The next post, or the auction's end with its slots settled."""
        settings, step_id = self.step.settings, self.step.id
        move = next_post(auction, lead_id, snapshot, settings, step_id, self.index)
        if isinstance(move, StepResult):
            return self._settle_slots(lead_id, snapshot, move)
        post: Post = move

        def after_post(answers: list[Answer]) -> StepResult | Asking:
            judged = judge_post(auction, post, answers[0], snapshot, step_id)
            if isinstance(judged, StepResult):
                return self._settle_slots(lead_id, snapshot, judged)
            return self._go_on(lead_id, snapshot, judged, abandon)

        return Asking([post.call], after_post, abandon=abandon)

    def _settle_slots(self, lead_id: str, snapshot: Snapshot, result: StepResult) -> StepResult:
        won = winner(result)
        for buyer in self.step.settings.buyers:
            checks = self._caps(lead_id, snapshot, buyer)
            if self.state is None or not checks:
                continue
            if buyer.id == won:
                self.state.confirm(lead_id, checks)
            else:
                self.state.release(lead_id, checks)
        return result

    def call(self, call: Call) -> Answer:
        return self.calls.run(call)

    def close(self) -> None:
        super().close()
        if self.owns_calls:
            self.calls.close()
        if self.state is not None:
            self.state.close()
