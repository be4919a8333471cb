"""A ping-post auction: ask every eligible buyer for a price, post the lead to the best bid.

Pure halves around the calls the runtime makes (``engine.runtime.handlers.auction``):

1. ``open_auction``: one ping per eligible buyer (a buyer at a full cap is not pinged:
   ``recipient.failed`` with ``cap_reached``), each carrying only the buyer's
   ``ping_fields``, which can never name PII (refused when the flow is read, and
   dropped again here).
2. ``judge_pings``: one ``recipient.pinged`` per buyer (its bid, or no bid, a late bid
   past the window, an error), and the bids ranked best first; ties go to the buyer
   listed first in the flow, so a re-run ranks as the first run did.
3. ``next_post`` / ``judge_post``: the full lead to the best bid left; a refused or failed
   post (``recipient.failed``/``recipient.error``) falls back to the next bid, until
   one buyer takes it (``recipient.delivered``, revenue the winning price) or the
   bids run out (a closing ``recipient.failed`` for the step).

An auction's record (``AuctionRecord``: the ping round's events, the ranking, the answers
of the posts that did not take the lead) is kept durably before the first post, so a
replay after a crash goes on from it (``resume_auction``) instead of pinging again: a
buyer that bids differently the second time cannot change the winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, HttpUrl, field_validator

from engine.caps import CapSpec
from engine.ids import event_id
from engine.masking import field_kind
from engine.model import ConfigModel
from engine.sealing import ALWAYS_SENSITIVE
from engine.steps.base import (
    TOTAL_DELIVERED,
    TOTAL_REVENUE,
    EventDraft,
    Outcome,
    Snapshot,
    StepResult,
)
from engine.steps.calls import (
    DEFAULT_IDEMPOTENCY_HEADER,
    HEADER_NAME,
    MAX_ID,
    Answer,
    Call,
    CallAuth,
    bounded,
    build_call,
    dig,
    no_credentials_in_url,
    read_answer,
    transaction,
)
from engine.steps.cap_checks import CapCheck, CapCount, cap_checks, recipient_cap_reason
from engine.steps.recipient import AcceptRule, submitted_at

DEFAULT_BID_WINDOW_MS = 750
# Events of one handling are numbered below 256 (engine.ids): a ping and a post per buyer,
# the closing event, and room for a retry's first event.
MAX_BUYERS = 50
FIELD_NAME = r"^[a-z][a-z0-9_]*$"
# Each ping's own deadline is the bid window, timed from when it is sent: that clock says
# whether a bid was late. The round of pings is cut a little after it, only to end pings
# that never got sent (stuck behind a buyer's concurrency limit).
ROUND_GRACE_MS = 100

BidStatus = Literal["bid", "no_bid", "late", "error"]


def _not_pii(names: list[str]) -> list[str]:
    """A ping goes to every buyer before any has paid: PII must never be in it."""
    pii = sorted(n for n in names if field_kind(n) is not None or n in ALWAYS_SENSITIVE)
    if pii:
        raise ValueError(f"ping_fields may not carry PII: {', '.join(pii)}")
    return names


class AuctionBuyer(ConfigModel):
    """One buyer of an auction: where it answers pings and takes posts, and how."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    name: str
    ping_url: Annotated[HttpUrl, AfterValidator(no_credentials_in_url)]
    post_url: Annotated[HttpUrl, AfterValidator(no_credentials_in_url)]
    # Credentials the buyer wants on both calls, by reference (engine.steps.calls.CallAuth).
    auth: CallAuth | None = None
    # Lead fields (``lead.<name>``) the ping carries; never PII (email, phone, name, address).
    ping_fields: Annotated[
        list[Annotated[str, Field(pattern=FIELD_NAME)]],
        Field(min_length=1),
        AfterValidator(_not_pii),
    ]
    # Where the ping's answer holds the price; ``bid: false`` or no positive price: no bid.
    bid_path: str = "price"
    format: Literal["json", "form"] = "json"
    # The post's body; empty: every lead field under its own name (the full lead).
    mapping: dict[str, str] = Field(default_factory=dict)
    accept: AcceptRule = AcceptRule()
    reason_path: str = "reason"
    id_path: str | None = "id"
    caps: list[CapSpec] = Field(default_factory=list)
    # The most calls in flight to this buyer at once (its own limit); None: no limit.
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] | None = None
    idempotency_header: Annotated[str, Field(pattern=HEADER_NAME)] = DEFAULT_IDEMPOTENCY_HEADER


class AuctionSettings(ConfigModel):
    buyers: Annotated[list[AuctionBuyer], Field(min_length=1, max_length=MAX_BUYERS)]
    # How long bids are waited for; a bid that comes later is ignored (and recorded as late).
    bid_window_ms: Annotated[int, Field(gt=0, le=10_000)] = DEFAULT_BID_WINDOW_MS
    # Each post's deadline (checked against the transaction timeout like a recipient's).
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000

    @field_validator("buyers")
    @classmethod
    def _unique(cls, buyers: list[AuctionBuyer]) -> list[AuctionBuyer]:
        ids = [b.id for b in buyers]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"buyer ids must be unique, repeated: {', '.join(twice)}")
        return buyers


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping to make: to whom, and the call."""

    buyer: AuctionBuyer
    call: Call


@dataclass(frozen=True, slots=True)
class Opening:
    """An auction's start: events for buyers left out at a full cap, the pings to make."""

    events: list[EventDraft]
    pings: list[Ping]


@dataclass(frozen=True, slots=True)
class Bid:
    buyer: AuctionBuyer
    price: float
    # The buyer's place in the flow: the tie-break, so equal bids rank the same every run.
    order: int


@dataclass(frozen=True, slots=True)
class Auction:
    """An auction under way: its events so far and the bids not yet tried, best first."""

    events: list[EventDraft]
    bids: list[Bid]
    posts: int = 0
    ranked: list[Bid] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Post:
    """The post to make next: to the best bid left."""

    bid: Bid
    call: Call


@dataclass(frozen=True, slots=True)
class AuctionRecord:
    """What the ledger keeps of an auction: the ping round's events (the buyers left out at
    a full cap, then one ``recipient.pinged`` per buyer), the bids ranked best first as
    (buyer id, price), and the answers of the posts that did not take the lead, in order."""

    events: list[EventDraft]
    ranked: list[tuple[str, float]]
    refused: list[Answer] = field(default_factory=list)


def auction_ledger_key(lead_id: str, snapshot: Snapshot, step_index: int) -> str:
    """The auction's key in the ledger: the id its first event has (lead, submission, step,
    attempt 1 - an auction has no retries), the same on every replay of the lead's input."""
    return event_id(lead_id, submitted_at(lead_id, snapshot), step_index, 0)


def record_of(auction: Auction) -> AuctionRecord:
    """The record of an auction whose pings are judged, before any post."""
    return AuctionRecord(list(auction.events), [(b.buyer.id, b.price) for b in auction.ranked])


def resume_auction(
    record: AuctionRecord,
    lead_id: str,
    snapshot: Snapshot,
    settings: AuctionSettings,
    step_id: str,
    step_index: int,
) -> Auction | StepResult:
    """The auction where its record leaves it: its ping events and ranking as recorded (not
    pinged again), each recorded refused post judged again as the first run judged it (the
    same events), and the next post to the bid after them - the one whose post may already
    have gone out, under the same idempotency key. A bid of a buyer no longer in the step
    (its flow version edited in place) is dropped: it cannot be posted to."""
    order = {b.id: i for i, b in enumerate(settings.buyers)}
    buyers = {b.id: b for b in settings.buyers}
    bids = [
        Bid(buyers[buyer_id], price, order[buyer_id])
        for buyer_id, price in record.ranked
        if buyer_id in buyers
    ]
    auction: Auction | StepResult = Auction(list(record.events), bids, 0, bids)
    for answer in record.refused:
        if isinstance(auction, StepResult):
            break
        move = next_post(auction, lead_id, snapshot, settings, step_id, step_index)
        if isinstance(move, StepResult):
            return move
        auction = judge_post(auction, move, answer, snapshot, step_id)
    return auction


def auction_key(lead_id: str, snapshot: Snapshot, step_index: int, buyer_id: str) -> str:
    """The idempotency key of the lead's post to ``buyer_id`` at this step: from the lead,
    its submission time, the step and the buyer only, so a replay posts with the same key."""
    base = event_id(lead_id, submitted_at(lead_id, snapshot), step_index, 0)
    return f"{base}.{buyer_id}"


def auction_caps(
    flow_id: str, step_id: str, buyer: AuctionBuyer, lead_id: str, snapshot: Snapshot
) -> list[CapCheck]:
    """The caps a delivery of the lead to ``buyer`` counts in (per buyer of the step)."""
    scope = f"recipient:{flow_id}/{step_id}/{buyer.id}"
    return cap_checks(scope, buyer.caps, submitted_at(lead_id, snapshot))


def ping_body(snapshot: Snapshot, buyer: AuctionBuyer) -> dict[str, Any]:
    """The buyer's ping fields of the lead; a PII-named field is dropped even if a flow
    read before the rule held names it."""
    return {
        name: snapshot[f"lead.{name}"]
        for name in buyer.ping_fields
        if snapshot.get(f"lead.{name}") is not None
        and field_kind(name) is None
        and name not in ALWAYS_SENSITIVE
    }


def open_auction(
    lead_id: str,
    snapshot: Snapshot,
    settings: AuctionSettings,
    step_index: int,
    full: Mapping[str, CapCount],
) -> Opening:
    """The pings for the lead, one per buyer not at a ``full`` cap (by buyer id)."""
    events, pings = [], []
    for buyer in settings.buyers:
        capped = full.get(buyer.id)
        if capped is not None:
            reason = recipient_cap_reason(capped)
            events.append(
                EventDraft(
                    "recipient.failed",
                    "failure",
                    reason,
                    entity_id=buyer.id,
                    revenue=0.0,
                    cap_reached=True,
                )
            )
            continue
        mapping = {name: f"lead.{name}" for name in ping_body(snapshot, buyer)}
        key = auction_key(lead_id, snapshot, step_index, buyer.id) + ".ping"
        request = build_call(
            snapshot, str(buyer.ping_url), mapping, "json", key, buyer.idempotency_header
        )
        # A ping's deadline is the window: an answer after it is worth nothing.
        call = Call(request, settings.bid_window_ms, "Buyer", buyer.max_concurrency, buyer.auth)
        pings.append(Ping(buyer, call))
    return Opening(events, pings)


def ping_round_ms(settings: AuctionSettings) -> int:
    """How long the runner waits for the round of pings (``ROUND_GRACE_MS``)."""
    return settings.bid_window_ms + ROUND_GRACE_MS


def _price(data: dict[str, Any], path: str) -> float | None:
    if data.get("bid", True) is False:
        return None
    price = dig(data, path)
    if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
        return None
    return float(price)


def judge_ping(
    step_id: str, ping: Ping, answer: Answer, window_ms: int, order: int = 0
) -> tuple[EventDraft, Bid | None]:
    """One ``recipient.pinged``, and the bid it makes (None: no bid, late, or an error)."""
    request, response = transaction(ping.call.request, answer)
    data, error = read_answer(answer, "Buyer")
    price: float | None = None
    status: BidStatus
    outcome: Outcome
    if answer.cut or answer.wait_ms >= window_ms:
        # Cut at the window (by the ping's own deadline or the round's end), or in but past
        # it: ignored as if it never came.
        status, outcome = "late", "failure"
        reason: str | None = f"No bid within the {window_ms}ms bid window"
    elif data is None:
        status, outcome, reason = "error", "error", error
    else:
        price = _price(data, ping.buyer.bid_path)
        status = "bid" if price is not None else "no_bid"
        outcome = "success" if price is not None else "failure"
        reason = None if price is not None else "No bid"
    prefix = f"appended.{step_id}.bids.{ping.buyer.id}"
    appended: Snapshot = {f"{prefix}.status": status, f"{prefix}.price": price or 0.0}
    draft = EventDraft(
        "recipient.pinged",
        outcome,
        reason,
        entity_id=ping.buyer.id,
        appended=appended,
        request=request,
        response=response,
        wait_ms=answer.wait_ms,
        circuit_breaker_state=answer.breaker_state if status == "error" else None,
    )
    return draft, Bid(ping.buyer, price, order) if price is not None else None


def judge_pings(
    step_id: str,
    settings: AuctionSettings,
    opening: Opening,
    answers: list[Answer],
) -> Auction:
    """Every ping's event, and the bids ranked: highest price first, then flow order."""
    order = {b.id: i for i, b in enumerate(settings.buyers)}
    events = list(opening.events)
    bids = []
    for ping, answer in zip(opening.pings, answers, strict=True):
        window = settings.bid_window_ms
        draft, bid = judge_ping(step_id, ping, answer, window, order[ping.buyer.id])
        events.append(draft)
        if bid is not None:
            bids.append(bid)
    ranked = sorted(bids, key=lambda b: (-b.price, b.order))
    return Auction(events, ranked, 0, ranked)


def post_request(
    lead_id: str, snapshot: Snapshot, settings: AuctionSettings, step_index: int, bid: Bid
) -> Call:
    buyer = bid.buyer
    mapping = buyer.mapping or {
        name[len("lead.") :]: name for name in sorted(snapshot) if name.startswith("lead.")
    }
    key = auction_key(lead_id, snapshot, step_index, buyer.id)
    request = build_call(
        snapshot, str(buyer.post_url), mapping, buyer.format, key, buyer.idempotency_header
    )
    return Call(request, settings.timeout_ms, "Buyer", buyer.max_concurrency, buyer.auth)


def next_post(
    auction: Auction,
    lead_id: str,
    snapshot: Snapshot,
    settings: AuctionSettings,
    step_id: str,
    step_index: int,
) -> Post | StepResult:
    """The post to the best bid left, or, with none left, the auction's end unsold."""
    if auction.bids:
        bid = auction.bids[0]
        return Post(bid, post_request(lead_id, snapshot, settings, step_index, bid))
    if auction.posts == 0:
        reason = "No bids"
    else:
        reason = f"No bidder took the lead ({auction.posts} posted)"
    closing = EventDraft("recipient.failed", "failure", reason, entity_id=step_id, revenue=0.0)
    return StepResult([*auction.events, closing], proceed=True)


def judge_post(
    auction: Auction, post: Post, answer: Answer, snapshot: Snapshot, step_id: str
) -> Auction | StepResult:
    """The lead delivered to the bidder (the auction's end), or the auction without its bid."""
    buyer, request = post.bid.buyer, post.call.request
    sent, received = transaction(request, answer)

    def draft(type_: str, outcome: Outcome, reason: str | None, **kw: Any) -> EventDraft:
        return EventDraft(
            type_,
            outcome,
            reason,
            entity_id=buyer.id,
            request=sent,
            response=received,
            wait_ms=answer.wait_ms,
            **kw,
        )

    data, error = read_answer(answer, "Buyer")
    rest = Auction(auction.events, auction.bids[1:], auction.posts + 1, auction.ranked)
    if data is None:
        failed = draft(
            "recipient.error", "error", error, circuit_breaker_state=answer.breaker_state
        )
        return _without(rest, failed)
    if dig(data, buyer.accept.path) != buyer.accept.value:
        said = dig(data, buyer.reason_path)
        text = bounded(said) if said not in (None, "") else "Rejected by buyer"
        return _without(rest, draft("recipient.failed", "failure", text, revenue=0.0))
    price = post.bid.price
    appended: Snapshot = {
        f"appended.{step_id}.winner": buyer.id,
        f"appended.{step_id}.price": price,
        f"appended.{step_id}.bids": len(auction.ranked),
    }
    buyer_id = dig(data, buyer.id_path) if buyer.id_path else None
    if buyer_id is not None:
        appended[f"appended.{step_id}.id"] = bounded(buyer_id, MAX_ID)
    totals: Snapshot = {
        TOTAL_REVENUE: float(snapshot.get(TOTAL_REVENUE) or 0.0) + price,
        TOTAL_DELIVERED: int(snapshot.get(TOTAL_DELIVERED) or 0) + 1,
    }
    delivered = draft(
        "recipient.delivered",
        "success",
        None,
        revenue=price,
        appended=appended,
        vars={**appended, **totals},
    )
    return StepResult([*auction.events, delivered], proceed=True)


def _without(rest: Auction, failed: EventDraft) -> Auction:
    return Auction([*rest.events, failed], rest.bids, rest.posts, rest.ranked)


def winner(result: StepResult) -> str | None:
    """The buyer an ended auction delivered the lead to, if any (its slot is kept)."""
    last = result.events[-1] if result.events else None
    if last is not None and last.type == "recipient.delivered":
        return last.entity_id
    return None
