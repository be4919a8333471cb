"""The auction scenario's figures, read from events as the scenario reads them."""

from __future__ import annotations

from typing import Any

from bench.report import ratios
from bench.results_model import ScenarioResult
from bench.scenarios.auction import WINDOW_MS, auction_figures
from engine.events import StepIdentity, Timing, stamp_events
from engine.steps.base import EventDraft
from schemas.codec import default_codec


def _event(lead: str, type_: str, end_ms: int, **kw: Any) -> bytes:
    who = StepIdentity("f", 1, "auction", "Auction", 1, "host", "0")
    (event,) = stamp_events(
        [EventDraft(type_, "success", **kw)], who, lead, 0, {}, Timing(0, end_ms, 0)
    )
    return default_codec().encode(event)


def _delivered(lead: str, end_ms: int, sent: int, received: int) -> bytes:
    request = {
        "method": "POST",
        "uri": "http://b/leads",
        "headers": {},
        "body": "",
        "timestamp": sent,
    }
    response = {
        "status": 200, "status_text": "", "headers": {}, "body": "", "timestamp": received,
    }  # fmt: skip
    return _event(lead, "recipient.delivered", end_ms, request=request, response=response)


def test_accepted_to_posted_and_post_latency_come_from_the_events() -> None:
    values = [
        _event("a", "source.accepted", 1000),
        _event("b", "source.accepted", 2000),
        _event("c", "source.accepted", 3000),  # no bid: not sold, not in the latencies
        _event("a", "recipient.pinged", 1500, appended={"appended.x.bids.b1.status": "late"}),
        _event("a", "recipient.pinged", 1500, appended={"appended.x.bids.b2.status": "bid"}),
        _delivered("a", 1900, sent=1700, received=1880),
        _delivered("b", 2600, sent=2500, received=2590),
    ]
    figures = auction_figures(values, 20.0)
    assert figures["leads_accepted"] == 3 and figures["leads_sold"] == 2
    assert (figures["posted_p50_ms"], figures["posted_p99_ms"]) == (600.0, 900.0)
    assert (figures["post_p50_ms"], figures["post_p99_ms"]) == (90.0, 180.0)
    assert figures["posted_p99_over_budget_ms"] == 900.0 - (WINDOW_MS + 180.0)
    assert figures["late_ping_share"] == 0.5


def test_the_auction_target_is_met_within_the_window_plus_the_post_p99() -> None:
    result = ScenarioResult("auction", "posted_p99_ms", "ms")
    result.add({"posted_p99_ms": 900.0, "posted_p99_over_budget_ms": -30.0})
    out = ratios({"auction": result})
    assert out["auction posted_p99_over_budget_ms"] == {
        "value": -30.0,
        "target": "<= 0",
        "met": True,
    }
    result.rounds["posted_p99_over_budget_ms"] = [12.0]
    assert ratios({"auction": result})["auction posted_p99_over_budget_ms"]["met"] is False
