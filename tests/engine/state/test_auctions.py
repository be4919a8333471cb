"""The auction ledger on real Postgres: the first recorded ranking wins, refusals in order,
and the ping events come back exactly as they went in (what a re-run emits again)."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from engine.state.auctions import AuctionPlace
from engine.state.store import StateStore
from engine.steps.auction import AuctionRecord
from engine.steps.base import EventDraft
from engine.steps.calls import Answer

pytestmark = pytest.mark.stack

Db = psycopg.Connection[tuple[Any, ...]]
PLACE = AuctionPlace("01KB00000000ABCDEF00030000", "01KB0000000000000000000000", "solar", "auction")


def pinged(buyer: str, price: float, status: str = "bid") -> EventDraft:
    return EventDraft(
        "recipient.pinged",
        "success" if status == "bid" else "failure",
        None if status == "bid" else "No bid",
        entity_id=buyer,
        # Key order and a float that is a whole number must both survive the round trip.
        appended={
            f"appended.auction.bids.{buyer}.status": status,
            f"appended.auction.bids.{buyer}.price": price,
        },
        request={"method": "POST", "uri": "http://b/ping", "headers": {"Z": "1", "A": "2"}},
        response={"status": 200, "body": '{"price": 20}', "timestamp": 17},
        wait_ms=41,
    )


RECORD = AuctionRecord(
    [
        EventDraft(
            "recipient.failed",
            "failure",
            "Daily cap reached (3/3)",
            entity_id="delta",
            revenue=0.0,
            cap_reached=True,
        ),
        pinged("alpha", 20.0),
        pinged("beta", 35.5),
        pinged("gamma", 0.0, "no_bid"),
    ],
    [("beta", 35.5), ("alpha", 20.0)],
)


def test_an_auction_is_recorded_once_and_read_back_as_it_went_in(store: StateStore) -> None:
    assert store.recorded_auction(PLACE.key) is None
    kept = store.record_auction(PLACE, RECORD)
    assert kept == RECORD
    assert [list(e.appended) for e in kept.events] == [list(e.appended) for e in RECORD.events]
    assert list(kept.events[1].request["headers"]) == ["Z", "A"]  # type: ignore[index]
    assert isinstance(kept.events[3].appended["appended.auction.bids.gamma.price"], float)
    # A second run (another ranking: the buyers bid differently) gets the first one back.
    other = AuctionRecord(RECORD.events[:2], [("alpha", 90.0)])
    assert store.record_auction(PLACE, other) == RECORD
    assert store.recorded_auction(PLACE.key) == RECORD


def test_refused_posts_come_back_in_order_once_each(store: StateStore, db: Db) -> None:
    store.record_auction(PLACE, RECORD)
    refused = Answer(200, {"X-Id": "1"}, orjson.dumps({"outcome": "failure"}), None, 30, 5, 35)
    failed = Answer(None, {}, b"", "Buyer timed out after 5000ms", 5000, 40, 0, "open")
    store.record_refused_post(PLACE.key, 0, "beta", refused)
    store.record_refused_post(PLACE.key, 1, "alpha", failed)
    store.record_refused_post(PLACE.key, 0, "beta", failed)  # a twin's: the first stays
    found = store.recorded_auction(PLACE.key)
    assert found is not None and found.refused == [refused, failed]
    rows = db.execute(
        "SELECT position, buyer_id FROM engine_auction_posts ORDER BY position"
    ).fetchall()
    assert rows == [(0, "beta"), (1, "alpha")]


def test_the_ledger_is_indexed_by_age_for_retention(db: Db) -> None:
    (index,) = db.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname = 'engine_auction_ledger_created'"
    ).fetchone() or (None,)
    assert index is not None and "(created_at)" in index
