"""The auction step's I/O: cap slots, the ledger, then the pings at once, then posts one by one.

What the pings and posts mean is ``engine.steps.auction``'s; this module holds
the slots and the auction's record and hands the calls to the runner as
``Asking`` rounds: the pings together within the bid window, then one post at
a time (the next only after the previous is refused). The concurrent loop
makes the calls outside any transaction and commits the lead's events, with
its offset, only once the auction has ended.

So a crash mid-auction runs the lead again. Before the first post the ranking
is recorded in the auction ledger (``engine.state.auctions``), and each post
that did not take the lead before the next is made; a re-run that finds the
record does not ping again (a buyer bidding differently would change the
winner, and the lead would be posted to two buyers): it emits the recorded
ping events, judges the recorded refusals again, and posts next where the
first run may already have posted, under the same idempotency key (lead,
step, buyer), which a buyer that honours it takes once.

Caps stay exact: a slot is reserved in each capped buyer's caps before the
pings (keyed by lead id, so a re-run finds its own), so a buyer at its cap is
not even pinged; the slots of buyers that did not bid are given back once the
bids are in, the winner's is confirmed and the rest released when the auction
ends. Holding the bidders' slots until then costs a full buyer a few hundred
milliseconds of a slot it may not keep; it is what makes a fallback post exact.
A re-run from the record takes the slots of the bids left again (a slot it
still holds is kept, even in a cap that filled since).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from engine.events import LeadEvent
from engine.flows import AuctionStep, Flow
from engine.runtime.calls import CallRunner
from engine.runtime.handlers.base import Asking, EventInputHandler
from engine.settings import get_settings
from engine.state.auctions import AuctionPlace
from engine.state.store import StateStore
from engine.steps.auction import (
    Auction,
    AuctionBuyer,
    AuctionRecord,
    Post,
    auction_caps,
    auction_ledger_key,
    judge_pings,
    judge_post,
    next_post,
    open_auction,
    ping_round_ms,
    record_of,
    resume_auction,
    winner,
)
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from engine.steps.cap_checks import CapCheck, CapCount
from schemas.codec import EventCodec

log = structlog.get_logger(__name__)


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
        # The process settings' database: the ledger (every auction) and the caps.
        self.state = state if state is not None else StateStore(get_settings())

    def _caps(self, lead_id: str, snapshot: Snapshot, buyer: AuctionBuyer) -> list[CapCheck]:
        if not buyer.caps:
            return []
        return auction_caps(self.flow.id, self.step.id, buyer, lead_id, snapshot)

    def _release(self, lead_id: str, snapshot: Snapshot, buyers: list[AuctionBuyer]) -> None:
        for buyer in buyers:
            checks = self._caps(lead_id, snapshot, buyer)
            if checks:
                self.state.release(lead_id, checks)

    def plan(self, event: LeadEvent, snapshot: Snapshot) -> StepResult | Asking:
        lead_id: str = event["lead_id"]
        settings, step_id = self.step.settings, self.step.id
        buyers = settings.buyers
        place = AuctionPlace(
            auction_ledger_key(lead_id, snapshot, self.index), lead_id, self.flow.id, step_id
        )
        recorded = self.state.recorded_auction(place.key)
        if recorded is not None:
            return self._replay(place, snapshot, recorded)
        full: dict[str, CapCount] = {}
        try:
            for buyer in buyers:
                checks = self._caps(lead_id, snapshot, buyer)
                capped = self.state.reserve(lead_id, checks) if checks else None
                if capped is not None:
                    full[buyer.id] = capped
            opening = open_auction(lead_id, snapshot, settings, self.index, full)
        except Exception:
            self._release(lead_id, snapshot, buyers)  # nothing held survives a failed plan
            raise

        def abandon() -> None:
            self._release(lead_id, snapshot, buyers)

        def after_pings(answers: list[Answer]) -> StepResult | Asking:
            judged = judge_pings(step_id, settings, opening, answers)
            if not judged.bids:  # nothing will be posted: nothing a re-run could contradict
                return self._go_on(place, snapshot, judged, abandon)
            # Before the first post: from here on every run of this auction, this one
            # included, goes on from the ranking recorded first.
            kept = self.state.record_auction(place, record_of(judged))
            auction = resume_auction(kept, lead_id, snapshot, settings, step_id, self.index)
            if isinstance(auction, StepResult):  # a twin got further: its record decides
                return self._settle_slots(lead_id, snapshot, auction)
            bidders = {b.buyer.id for b in auction.bids}
            self._release(lead_id, snapshot, [b for b in buyers if b.id not in bidders])
            return self._go_on(place, snapshot, auction, abandon)

        if not opening.pings:
            return after_pings([])
        calls = [p.call for p in opening.pings]
        return Asking(calls, after_pings, window_ms=ping_round_ms(settings), abandon=abandon)

    def _replay(
        self, place: AuctionPlace, snapshot: Snapshot, recorded: AuctionRecord
    ) -> StepResult | Asking:
        """A re-run of an auction a run before this one recorded: no pings, the recorded
        events and refusals, then the post the first run was making or about to make."""
        lead_id, settings = place.lead_id, self.step.settings
        auction = resume_auction(recorded, lead_id, snapshot, settings, self.step.id, self.index)
        if isinstance(auction, StepResult):
            return self._settle_slots(lead_id, snapshot, auction)
        left = [b.buyer for b in auction.bids]
        try:
            for buyer in left:
                checks = self._caps(lead_id, snapshot, buyer)
                if checks:
                    # Kept if still held; if given back meanwhile and the cap is full now,
                    # the recorded order still decides (the post may have gone out already).
                    self.state.reserve(lead_id, checks)
        except Exception:
            self._release(lead_id, snapshot, left)
            raise
        log.info("auction resumed from its record", lead_id=lead_id, step_id=place.step_id)

        def abandon() -> None:
            self._release(lead_id, snapshot, left)

        return self._go_on(place, snapshot, auction, abandon)

    def _go_on(
        self, place: AuctionPlace, snapshot: Snapshot, auction: Auction, abandon: Callable[[], None]
    ) -> StepResult | Asking:
        """The next post, or the auction's end with its slots settled."""
        settings, step_id, lead_id = self.step.settings, self.step.id, place.lead_id
        move = next_post(auction, lead_id, snapshot, settings, step_id, self.index)
        if isinstance(move, StepResult):
            return self._settle_slots(lead_id, snapshot, move)
        post: Post = move

        def after_post(answers: list[Answer]) -> StepResult | Asking:
            judged = judge_post(auction, post, answers[0], snapshot, step_id)
            if isinstance(judged, StepResult):
                return self._settle_slots(lead_id, snapshot, judged)
            # Before the next post: a re-run must not post to this buyer again (it may take
            # the lead this time) nor skip to the next bid without this one's refusal.
            buyer_id = post.bid.buyer.id
            self.state.record_refused_post(place.key, auction.posts, buyer_id, answers[0])
            return self._go_on(place, snapshot, judged, abandon)

        return Asking([post.call], after_post, abandon=abandon)

    def _settle_slots(self, lead_id: str, snapshot: Snapshot, result: StepResult) -> StepResult:
        won = winner(result)
        for buyer in self.step.settings.buyers:
            checks = self._caps(lead_id, snapshot, buyer)
            if not checks:
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
        self.state.close()
