"""The ping-post auction: who is pinged with what, which bid wins, what a refused post does."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from pydantic import ValidationError

from engine.caps import CapSpec
from engine.errors import FlowConfigError
from engine.flows import parse_flow
from engine.ids import id_timestamp_ms
from engine.steps.auction import (
    Auction,
    AuctionBuyer,
    AuctionRecord,
    AuctionSettings,
    Opening,
    Post,
    auction_caps,
    auction_key,
    auction_ledger_key,
    judge_pings,
    judge_post,
    next_post,
    open_auction,
    ping_body,
    record_of,
    resume_auction,
    winner,
)
from engine.steps.base import TOTAL_DELIVERED, TOTAL_REVENUE, StepResult
from engine.steps.calls import Answer
from engine.steps.cap_checks import CapCount

LEAD_ID = "01KB0000000000000000000000"
LEAD = {
    "lead.first_name": "Ada",
    "lead.last_name": "Lovelace",
    "lead.email": "ada@example.com",
    "lead.phone_1": "5125550123",
    "lead.address_1": "1 Main St",
    "lead.state": "TX",
    "lead.postal_code": "78701",
    "lead.roof_age": 7,
    "submission.timestamp": 1_764_000_000_000,
    TOTAL_REVENUE: 0.0,
    TOTAL_DELIVERED: 0,
}
STEP = "auction"
INDEX = 3


def buyer(id_: str, **kw: object) -> AuctionBuyer:
    return AuctionBuyer.model_validate(
        {
            "id": id_,
            "name": id_.title(),
            "ping_url": f"http://{id_}.example/ping",
            "post_url": f"http://{id_}.example/leads",
            "ping_fields": ["state", "postal_code", "roof_age"],
            **kw,
        }
    )


def settings(*ids: str, **kw: object) -> AuctionSettings:
    return AuctionSettings(buyers=[buyer(i) for i in ids], **kw)  # type: ignore[arg-type]


def answer(
    body: object = None, status: int | None = 200, wait_ms: int = 40, **kw: object
) -> Answer:
    raw = orjson.dumps(body) if body is not None else b""
    return Answer(status, {}, raw, wait_ms=wait_ms, sent_at_ms=1, received_at_ms=1 + wait_ms, **kw)  # type: ignore[arg-type]


def bid(price: float, wait_ms: int = 40) -> Answer:
    return answer({"bid": True, "price": price}, wait_ms=wait_ms)


ACCEPTED = answer({"outcome": "success", "id": "B-1"})
REFUSED = answer({"outcome": "failure", "reason": "Duplicate lead"})


def run(
    s: AuctionSettings,
    pings: dict[str, Answer],
    post: Callable[[str], Answer] = lambda _: ACCEPTED,
    full: dict[str, CapCount] | None = None,
) -> tuple[StepResult, list[str]]:
    """The whole auction as the handler drives it: pings answered from ``pings``, each post
    answered by ``post(buyer id)``. The result, and the buyers posted to in order."""
    opening = open_auction(LEAD_ID, LEAD, s, INDEX, full or {})
    answers = [pings[p.buyer.id] for p in opening.pings]
    state: Auction | StepResult = judge_pings(STEP, s, opening, answers)
    posted = []
    while isinstance(state, Auction):
        move = next_post(state, LEAD_ID, LEAD, s, STEP, INDEX)
        if isinstance(move, StepResult):
            return move, posted
        posted.append(move.bid.buyer.id)
        state = judge_post(state, move, post(move.bid.buyer.id), LEAD, STEP)
    return state, posted


def types(result: StepResult) -> list[tuple[str, str | None, str]]:
    return [(e.type, e.entity_id, e.outcome) for e in result.events]


def test_every_buyer_is_pinged_at_once_with_its_ping_fields_only() -> None:
    opening = open_auction(LEAD_ID, LEAD, settings("alpha", "beta"), INDEX, {})
    assert [p.buyer.id for p in opening.pings] == ["alpha", "beta"]
    for ping in opening.pings:
        assert orjson.loads(ping.call.request.body) == {
            "state": "TX",
            "postal_code": "78701",
            "roof_age": 7,
        }
        assert ping.call.request.url == f"http://{ping.buyer.id}.example/ping"
        # A ping's deadline is the bid window: nothing after it counts.
        assert ping.call.timeout_ms == 750


def test_the_highest_bid_wins_and_its_price_is_the_revenue() -> None:
    result, posted = run(
        settings("alpha", "beta", "gamma"),
        {"alpha": bid(20), "beta": bid(35.5), "gamma": bid(12)},
    )
    assert posted == ["beta"]
    assert types(result) == [
        ("recipient.pinged", "alpha", "success"),
        ("recipient.pinged", "beta", "success"),
        ("recipient.pinged", "gamma", "success"),
        ("recipient.delivered", "beta", "success"),
    ]
    delivered = result.events[-1]
    assert delivered.revenue == 35.5
    assert delivered.vars[TOTAL_REVENUE] == 35.5
    assert delivered.vars[TOTAL_DELIVERED] == 1
    assert delivered.appended["appended.auction.winner"] == "beta"
    assert delivered.appended["appended.auction.price"] == 35.5
    assert delivered.appended["appended.auction.id"] == "B-1"
    assert result.events[0].appended == {
        "appended.auction.bids.alpha.status": "bid",
        "appended.auction.bids.alpha.price": 20.0,
    }
    # Only the winning delivery carries revenue: a bid is not money.
    assert [e.revenue for e in result.events[:3]] == [None, None, None]
    assert winner(result) == "beta"


def test_the_post_carries_the_full_lead_and_a_key_per_buyer_stable_across_runs() -> None:
    s = settings("alpha")
    auction = judge_pings(STEP, s, open_auction(LEAD_ID, LEAD, s, INDEX, {}), [bid(10)])
    move = next_post(auction, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(move, Post)
    body = orjson.loads(move.call.request.body)
    assert body["email"] == "ada@example.com" and body["phone_1"] == "5125550123"
    key = move.call.request.headers["Idempotency-Key"]
    assert key == auction_key(LEAD_ID, LEAD, INDEX, "alpha")
    assert key != auction_key(LEAD_ID, LEAD, INDEX, "beta")
    again = next_post(auction, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(again, Post) and again.call.request.headers["Idempotency-Key"] == key
    # The ping's key is another one: a buyer may keep pings and posts apart.
    (ping,) = open_auction(LEAD_ID, LEAD, s, INDEX, {}).pings
    assert ping.call.request.headers["Idempotency-Key"] == f"{key}.ping"
    assert move.call.timeout_ms == s.timeout_ms


def test_a_bid_after_the_window_is_ignored_and_recorded_as_late() -> None:
    # Cut at the round's end before its own deadline (sent late, on a busy loop): late too.
    cut = answer(None, status=None, wait_ms=610, error="Buyer no answer...", cut=True)
    result, posted = run(
        settings("alpha", "beta", "gamma"),
        {"alpha": bid(90, wait_ms=800), "beta": cut, "gamma": bid(15, wait_ms=700)},
    )
    assert posted == ["gamma"]
    late = result.events[0]
    assert (late.type, late.outcome, late.reason) == (
        "recipient.pinged",
        "failure",
        "No bid within the 750ms bid window",
    )
    assert late.appended["appended.auction.bids.alpha.status"] == "late"
    assert late.appended["appended.auction.bids.alpha.price"] == 0.0
    assert result.events[1].appended["appended.auction.bids.beta.status"] == "late"
    assert result.events[-1].revenue == 15


def test_a_refused_post_falls_back_to_the_next_bid() -> None:
    answers = {"alpha": REFUSED, "beta": answer(None, status=503)}
    result, posted = run(
        settings("alpha", "beta", "gamma"),
        {"alpha": bid(40), "beta": bid(30), "gamma": bid(20)},
        post=lambda b: answers.get(b, ACCEPTED),
    )
    assert posted == ["alpha", "beta", "gamma"]
    assert types(result)[3:] == [
        ("recipient.failed", "alpha", "failure"),
        ("recipient.error", "beta", "error"),
        ("recipient.delivered", "gamma", "success"),
    ]
    assert result.events[3].reason == "Duplicate lead"
    assert result.events[-1].revenue == 20
    assert result.proceed


def test_when_every_bidder_refuses_the_auction_ends_unsold() -> None:
    result, posted = run(
        settings("alpha", "beta"), {"alpha": bid(40), "beta": bid(30)}, post=lambda _: REFUSED
    )
    assert posted == ["alpha", "beta"]
    last = result.events[-1]
    assert (last.type, last.entity_id, last.outcome) == ("recipient.failed", STEP, "failure")
    assert last.reason == "No bidder took the lead (2 posted)"
    assert winner(result) is None
    assert all(e.revenue in (None, 0.0) for e in result.events)


def test_no_bids_no_post() -> None:
    result, posted = run(
        settings("alpha", "beta", "gamma"),
        {
            "alpha": answer({"bid": False}),
            "beta": answer({"price": 0}),
            "gamma": answer({"error": "down"}, status=500),
        },
    )
    assert posted == []
    assert types(result) == [
        ("recipient.pinged", "alpha", "failure"),
        ("recipient.pinged", "beta", "failure"),
        ("recipient.pinged", "gamma", "error"),
        ("recipient.failed", STEP, "failure"),
    ]
    assert result.events[0].reason == "No bid"
    assert result.events[2].appended["appended.auction.bids.gamma.status"] == "error"
    assert result.events[-1].reason == "No bids"


@pytest.mark.parametrize("order", [("alpha", "beta", "gamma"), ("gamma", "beta", "alpha")])
def test_equal_bids_go_to_the_buyer_listed_first(order: tuple[str, ...]) -> None:
    result, posted = run(settings(*order), dict.fromkeys(order, bid(25)))
    assert posted == [order[0]]
    assert winner(result) == order[0]


@pytest.mark.parametrize(
    "field", ["email", "phone_1", "first_name", "last_name", "address_1", "ssn", "dob"]
)
def test_a_pii_ping_field_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="ping_fields may not carry PII"):
        buyer("alpha", ping_fields=["state", field])


def test_a_field_the_source_types_or_seals_as_pii_is_refused_whatever_its_name() -> None:
    flow = """
id: f
name: F
sensitive_fields: [income]
steps:
  - {id: source, kind: source, name: S, settings: {fields: [
      {name: contact, type: email}, {name: state, type: state}, {name: income}]}}
  - id: auction
    kind: auction
    name: A
    settings:
      buyers:
        - {id: a, name: A, ping_url: "http://a/ping", post_url: "http://a/post",
           ping_fields: [state, FIELD]}
"""
    for field in ("contact", "income"):
        with pytest.raises(FlowConfigError, match=f"ping_fields may not carry PII: {field}"):
            parse_flow(flow.replace("FIELD", field))
    parsed = parse_flow(flow.replace("FIELD", "state"))
    assert parsed.step("auction").kind == "auction"


def test_pii_never_reaches_a_ping_body_even_from_settings_that_skip_validation() -> None:
    # A model built without validation (an old flow in a registry, a bug) still pings no PII.
    sneaky = buyer("alpha").model_copy(update={"ping_fields": ["state", "email", "phone_1"]})
    assert ping_body(LEAD, sneaky) == {"state": "TX"}


def test_a_buyer_at_its_cap_is_not_pinged_and_says_why() -> None:
    s = AuctionSettings(
        buyers=[buyer("alpha", caps=[{"duration": "day", "maximum": 2}]), buyer("beta")]
    )
    (check,) = auction_caps("f", STEP, s.buyers[0], LEAD_ID, LEAD)
    full = {"alpha": CapCount(check, 2, holds_lead=False)}
    opening = open_auction(LEAD_ID, LEAD, s, INDEX, full)
    assert [p.buyer.id for p in opening.pings] == ["beta"]
    result, posted = run(s, {"beta": bid(10)}, full=full)
    assert posted == ["beta"]
    capped = result.events[0]
    assert (capped.type, capped.entity_id, capped.cap_reached) == (
        "recipient.failed",
        "alpha",
        True,
    )
    assert capped.reason == "Daily cap reached (2/2)"


def test_caps_count_per_buyer_in_the_window_of_the_leads_submission() -> None:
    s = AuctionSettings(
        buyers=[
            buyer("alpha", caps=[CapSpec(duration="day", maximum=2)]),
            buyer("beta", caps=[CapSpec(duration="day", maximum=2)]),
        ]
    )
    alpha = auction_caps("f", STEP, s.buyers[0], LEAD_ID, LEAD)
    beta = auction_caps("f", STEP, s.buyers[1], LEAD_ID, LEAD)
    assert alpha[0].key != beta[0].key
    lead = {k: v for k, v in LEAD.items() if k != "submission.timestamp"}
    from_id = auction_caps("f", STEP, s.buyers[0], LEAD_ID, lead)
    assert from_id[0].window.start_ms <= id_timestamp_ms(LEAD_ID) < from_id[0].window.end_ms


def test_settings_defaults_and_bounds() -> None:
    s = settings("alpha")
    assert (s.bid_window_ms, s.timeout_ms) == (750, 5000)
    with pytest.raises(ValidationError, match="repeated: alpha"):
        settings("alpha", "alpha")
    with pytest.raises(ValidationError):
        settings("alpha", timeout_ms=200_000)
    with pytest.raises(ValidationError, match="credentials in the URL"):
        buyer("alpha", post_url="http://u:p@alpha.example/leads")


def test_an_opening_with_no_eligible_buyer_ends_without_calls() -> None:
    s = settings("alpha")
    (check,) = auction_caps(
        "f", STEP, buyer("alpha", caps=[{"duration": "day", "maximum": 1}]), LEAD_ID, LEAD
    )
    full = {"alpha": CapCount(check, 1, holds_lead=False)}
    opening = open_auction(LEAD_ID, LEAD, s, INDEX, full)
    assert opening == Opening(opening.events, [])
    result = next_post(judge_pings(STEP, s, opening, []), LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(result, StepResult)
    assert [e.type for e in result.events] == ["recipient.failed", "recipient.failed"]


# -- a re-run from the auction's record (the ledger) -----------------------------------


def finish(
    s: AuctionSettings, state: Auction | StepResult, post: Callable[[str], Answer]
) -> tuple[StepResult, list[str]]:
    """Post from ``state`` on as the handler does; the result and the buyers posted to."""
    posted = []
    while isinstance(state, Auction):
        move = next_post(state, LEAD_ID, LEAD, s, STEP, INDEX)
        if isinstance(move, StepResult):
            return move, posted
        posted.append(move.bid.buyer.id)
        state = judge_post(state, move, post(move.bid.buyer.id), LEAD, STEP)
    return state, posted


def test_the_ledger_key_is_the_id_of_the_auctions_first_event() -> None:
    key = auction_ledger_key(LEAD_ID, LEAD, INDEX)
    assert key == auction_key(LEAD_ID, LEAD, INDEX, "alpha").split(".")[0]
    assert key == auction_ledger_key(LEAD_ID, dict(LEAD), INDEX)  # a re-run: the same key
    assert key != auction_ledger_key(LEAD_ID, LEAD, INDEX + 1)
    assert key != auction_ledger_key("01KB0000000000000000000001", LEAD, INDEX)


def test_a_rerun_from_the_record_posts_in_the_recorded_order_not_the_new_bids() -> None:
    s = settings("alpha", "beta", "gamma")
    first = judge_pings(
        STEP, s, open_auction(LEAD_ID, LEAD, s, INDEX, {}), [bid(20), bid(35), bid(12)]
    )
    record = record_of(first)
    assert record.ranked == [("beta", 35.0), ("alpha", 20.0), ("gamma", 12.0)]
    assert record.refused == []
    # The crash came after beta's post. Pinged again, alpha would now bid highest: the
    # re-run pings nobody and posts to beta again (the same key), never to alpha.
    resumed = resume_auction(record, LEAD_ID, LEAD, s, STEP, INDEX)
    result, posted = finish(s, resumed, lambda _: ACCEPTED)
    assert posted == ["beta"]
    original, _ = finish(s, first, lambda _: ACCEPTED)
    assert result.events == original.events  # what the first run would have committed
    assert [e.type for e in result.events] == ["recipient.pinged"] * 3 + ["recipient.delivered"]
    move = next_post(resumed, LEAD_ID, LEAD, s, STEP, INDEX)  # type: ignore[arg-type]
    assert isinstance(move, Post)
    assert move.call.request.headers["Idempotency-Key"] == auction_key(LEAD_ID, LEAD, INDEX, "beta")


def test_a_rerun_judges_the_recorded_refusals_again_and_posts_to_the_next_bid_only() -> None:
    s = settings("alpha", "beta", "gamma")
    first = judge_pings(
        STEP, s, open_auction(LEAD_ID, LEAD, s, INDEX, {}), [bid(40), bid(30), bid(20)]
    )
    broken = answer(None, status=503)
    answers = {"alpha": REFUSED, "beta": broken}
    original, posted = finish(s, first, lambda b: answers.get(b, ACCEPTED))
    assert posted == ["alpha", "beta", "gamma"]
    # Alpha refused and beta failed, both recorded; the crash came during gamma's post.
    record = AuctionRecord(record_of(first).events, record_of(first).ranked, [REFUSED, broken])
    resumed = resume_auction(record, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(resumed, Auction) and resumed.posts == 2
    # Alpha and beta would take the lead now: they are not asked again.
    result, again = finish(s, resumed, lambda _: ACCEPTED)
    assert again == ["gamma"]
    assert result.events == original.events


def test_a_rerun_with_every_recorded_post_refused_ends_unsold_without_a_post() -> None:
    s = settings("alpha", "beta")
    first = judge_pings(STEP, s, open_auction(LEAD_ID, LEAD, s, INDEX, {}), [bid(40), bid(30)])
    original, _ = finish(s, first, lambda _: REFUSED)
    record = AuctionRecord(record_of(first).events, record_of(first).ranked, [REFUSED, REFUSED])
    resumed = resume_auction(record, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(resumed, Auction) and resumed.bids == []
    result, posted = finish(s, resumed, lambda _: ACCEPTED)
    assert posted == []
    assert result.events == original.events
    assert result.events[-1].reason == "No bidder took the lead (2 posted)"


def test_a_rerun_keeps_the_recorded_capped_buyers_and_ties() -> None:
    capped = buyer("delta", caps=[{"duration": "day", "maximum": 5}])
    s = AuctionSettings(buyers=[buyer("alpha"), buyer("beta"), buyer("gamma"), capped])
    (check,) = auction_caps("f", STEP, capped, LEAD_ID, LEAD)
    full = {"delta": CapCount(check, 5, holds_lead=False)}
    opening = open_auction(LEAD_ID, LEAD, s, INDEX, full)
    first = judge_pings(STEP, s, opening, [bid(25), bid(25), answer({"bid": False})])
    record = record_of(first)
    assert record.ranked == [("alpha", 25.0), ("beta", 25.0)]  # a tie: flow order
    resumed = resume_auction(record, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(resumed, Auction)
    assert resumed.events == first.events
    assert resumed.events[0].type == "recipient.failed"  # delta, at its cap
    assert [(b.buyer.id, b.price, b.order) for b in resumed.bids] == [
        ("alpha", 25.0, 0),
        ("beta", 25.0, 1),
    ]


def test_a_recorded_bid_of_a_buyer_gone_from_the_step_is_dropped() -> None:
    s = settings("alpha", "beta")
    record = AuctionRecord([], [("zeta", 50.0), ("beta", 30.0)])
    resumed = resume_auction(record, LEAD_ID, LEAD, s, STEP, INDEX)
    assert isinstance(resumed, Auction)
    assert [b.buyer.id for b in resumed.bids] == ["beta"]
