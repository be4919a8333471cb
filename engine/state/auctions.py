"""The auction ledger in Postgres (``engine_auction_ledger``): an auction's record, kept
before its first post so a replay goes on from it instead of pinging again.

An auction's events are committed to Kafka only once it has ended, so a worker killed
between a post and that commit re-runs it. Without the ledger the re-run pings again, and
a buyer that bids differently can make another buyer the winner: the lead posted to two.
With it the first recorded ranking wins (insert-if-absent, then read back, so even a
fenced-off twin of the worker goes on from the same ranking), and every post that did not
take the lead is recorded before the next is made, so a replay posts only where the first
run may already have: the same buyer, under the same idempotency key.

The records hold the ping round's events (ping fields only, never PII, by the step's
rule) and the refused posts' answers (the buyer's response, not the lead it was sent).
Rows are only needed until the auction's events are committed (or while its input may be
replayed): retention prunes them by ``created_at`` (indexed).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson

from engine.state.postgres import Cursor
from engine.steps.auction import AuctionRecord
from engine.steps.base import EventDraft
from engine.steps.calls import Answer

_RECORD = """
INSERT INTO engine_auction_ledger (auction_key, lead_id, flow_id, step_id, pings, ranked)
VALUES (%(key)s, %(lead)s, %(flow)s, %(step)s, %(pings)s::json, %(ranked)s::json)
ON CONFLICT (auction_key) DO NOTHING
"""

_READ = "SELECT pings, ranked FROM engine_auction_ledger WHERE auction_key = %s"

_READ_POSTS = """
SELECT answer FROM engine_auction_posts WHERE auction_key = %s ORDER BY position
"""

_ADD_POST = """
INSERT INTO engine_auction_posts (auction_key, position, buyer_id, answer)
VALUES (%(key)s, %(position)s, %(buyer)s, %(answer)s::json)
ON CONFLICT (auction_key, position) DO NOTHING
"""


@dataclasses.dataclass(frozen=True, slots=True)
class AuctionPlace:
    """Which auction a record belongs to: its ledger key, and (for a reader) whose it is."""

    key: str
    lead_id: str
    flow_id: str
    step_id: str


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _answer_json(answer: Answer) -> dict[str, Any]:
    data = dataclasses.asdict(answer)
    data["body"] = base64.b64encode(answer.body).decode()
    return data


def _answer(data: dict[str, Any]) -> Answer:
    return Answer(**{**data, "body": base64.b64decode(data["body"])})


def record_auction(cur: Cursor, place: AuctionPlace, record: AuctionRecord) -> AuctionRecord:
    """Record the auction unless it is recorded already; the record that stands (the first)."""
    params = {
        "key": place.key,
        "lead": place.lead_id,
        "flow": place.flow_id,
        "step": place.step_id,
        "pings": _json([dataclasses.asdict(e) for e in record.events]),
        "ranked": _json(record.ranked),
    }
    cur.execute(_RECORD, params)
    # A statement of its own: under READ COMMITTED it sees a twin's row that the insert
    # above waited for and yielded to.
    found = read_auction(cur, place.key)
    assert found is not None  # inserted above, or there already
    return found


def read_auction(cur: Cursor, key: str) -> AuctionRecord | None:
    """The auction's record, with the posts that did not take the lead; None if none."""
    row = cur.execute(_READ, (key,)).fetchone()
    if row is None:
        return None
    pings, ranked = row
    refused = [_answer(a) for (a,) in cur.execute(_READ_POSTS, (key,)).fetchall()]
    return AuctionRecord(
        [EventDraft(**e) for e in pings],
        [(str(buyer), float(price)) for buyer, price in ranked],
        refused,
    )


def add_refused_post(cur: Cursor, key: str, position: int, buyer_id: str, answer: Answer) -> None:
    """Record that post ``position`` (0: the best bid's) did not take the lead."""
    answered = _json(_answer_json(answer))
    params = {"key": key, "position": position, "buyer": buyer_id, "answer": answered}
    cur.execute(_ADD_POST, params)
