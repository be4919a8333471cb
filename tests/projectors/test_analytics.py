"""The seeds' reporting questions, answered from a flow's events: per step, per rejection
reason, per source and per recipient.

Seven leads of two sources through a source, a filter and two buyers, with every
ending the engine records: delivered, rejected at the source, filtered out,
refused by one buyer and taken by the next, an error retried into a delivery
that the buyer later returned, and a buyer skipped because its cap was full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import new_lead_id
from engine.steps.base import EventDraft, Outcome, Snapshot
from projectors.batch import Record, build_batch
from projectors.params import TimeRange
from projectors.stats import (
    reason_analytics,
    recipient_analytics,
    source_analytics,
    step_analytics,
)
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec

pytestmark = pytest.mark.stack

CODEC = EventCodec()
BASE_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
HOUR_MS = 3_600_000
STEP_INDEX = {"source": 0, "service-area": 1, "premier": 2, "summit": 3, "feedback": 255}


@dataclass
class Story:
    """One lead's events, stamped step by step the way the engine stamps them."""

    flow_id: str
    source: str
    submitted_ms: int
    lead_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: int = 0

    def __post_init__(self) -> None:
        self.lead_id = new_lead_id(self.submitted_ms)

    def step(self, step_id: str, *drafts: EventDraft, ms: int = 5, attempt: int = 1) -> Story:
        who = StepIdentity(
            self.flow_id, 1, step_id, step_id.title(), STEP_INDEX[step_id], "test", "0.1.0"
        )
        start = self.submitted_ms + self.elapsed_ms
        self.elapsed_ms += ms + 1
        snapshot: Snapshot = {
            "lead.id": self.lead_id,
            "submission.timestamp": self.submitted_ms,
            "flow.id": self.flow_id,
            "source.id": self.source,
            "source.name": self.source.title(),
        }
        timing = Timing(start, start + ms, 0)
        self.events += stamp_events(
            list(drafts), who, self.lead_id, self.submitted_ms, snapshot, timing, attempt
        )
        return self

    def accepted(self, cost: float, ms: int) -> Story:
        return self.step(
            "source",
            EventDraft("source.submitted", "success", entity_id=self.source),
            EventDraft("source.accepted", "success", entity_id=self.source, cost=cost),
            ms=ms,
        )

    def rejected(self, reason: str, ms: int) -> Story:
        return self.step(
            "source",
            EventDraft("source.submitted", "success", entity_id=self.source),
            EventDraft("source.rejected", "failure", reason, entity_id=self.source),
            self.completed("failure", reason=reason),
            ms=ms,
        )

    def completed(
        self, outcome: Outcome, cost: float = 0.0, revenue: float = 0.0, reason: str | None = None
    ) -> EventDraft:
        return EventDraft(
            "flow.completed", outcome, reason, entity_id=self.flow_id, cost=cost, revenue=revenue
        )

    def delivery(self, step_id: str) -> dict[str, Any]:
        return next(
            e for e in self.events if e["step_id"] == step_id and e["type"] == "recipient.delivered"
        )


def passed() -> EventDraft:
    return EventDraft("filter.passed", "success", entity_id="service-area")


def buyer(
    step_id: str, type_: str, wait_ms: int, reason: str | None = None, **kw: Any
) -> EventDraft:
    outcomes: dict[str, Outcome] = {"delivered": "success", "failed": "failure", "error": "error"}
    outcome = outcomes[type_]
    return EventDraft(
        f"recipient.{type_}", outcome, reason, entity_id=step_id, wait_ms=wait_ms, **kw
    )


def returned(delivery: dict[str, Any]) -> list[EventDraft]:
    fields = {
        "feedback.type": "return",
        "feedback.reason": "Wrong number",
        "feedback.recipient_event_id": delivery["id"],
    }
    return [
        EventDraft(
            "feedback.received", "success", "Wrong number", vars=fields, entity_id="premier"
        ),
        EventDraft("feedback.processed", "success", vars=fields, entity_id="premier", revenue=0.0),
    ]


def stories(flow_id: str) -> dict[str, Story]:
    """The seven leads, a minute apart on 2025-11-24 from 16:00Z, except ``late``: a day on."""

    def lead(source: str, minute: int) -> Story:
        return Story(flow_id, source, BASE_MS + minute * 60_000)

    web, partner = "web", "partner"
    sold = lead(web, 0).accepted(2.5, ms=10).step("service-area", passed(), ms=1)
    sold.step(
        "premier",
        buyer("premier", "delivered", 100, revenue=30.0),
        sold.completed("success", 2.5, 30.0),
        ms=120,
    )
    bounced = lead(web, 1).rejected("Missing required field: email", ms=4)
    out_of_area = lead(web, 2).accepted(2.5, ms=12)
    out_of_area.step(
        "service-area",
        EventDraft("filter.failed", "failure", "Service area: lead.state is NY"),
        out_of_area.completed("failure", 2.5, reason="Service area: lead.state is NY"),
        ms=2,
    )
    second_buyer = lead(partner, 3).accepted(1.0, ms=8).step("service-area", passed(), ms=1)
    second_buyer.step(
        "premier", buyer("premier", "failed", 200, "Duplicate lead", revenue=0.0), ms=210
    )
    second_buyer.step(
        "summit",
        buyer("summit", "delivered", 50, revenue=20.0),
        second_buyer.completed("success", 1.0, 20.0),
        ms=60,
    )
    retried = lead(partner, 4).accepted(1.0, ms=6).step("service-area", passed(), ms=1)
    retried.step(
        "premier",
        buyer("premier", "error", 5000, "Buyer timeout"),
        EventDraft("retry.scheduled", "success", "Attempt 2 of 3", entity_id="premier"),
        ms=5005,
    )
    retried.step(
        "premier",
        EventDraft("retry.attempted", "success", entity_id="premier"),
        buyer("premier", "delivered", 300, revenue=25.0),
        retried.completed("success", 1.0, 25.0),
        ms=310,
        attempt=2,
    )
    retried.step("feedback", *returned(retried.delivery("premier")), ms=0)
    capped = lead(web, 5).accepted(2.5, ms=14).step("service-area", passed(), ms=1)
    capped.step(
        "premier",
        buyer("premier", "failed", 0, "Daily cap reached (1/1)", revenue=0.0, cap_reached=True),
        ms=2,
    )
    capped.step(
        "summit",
        buyer("summit", "failed", 80, "Rejected by buyer", revenue=0.0),
        capped.completed("failure", 2.5, reason="Rejected by buyer"),
        ms=90,
    )
    late = lead(web, 24 * 60).rejected("Missing required field: email", ms=2)
    return {
        "sold": sold,
        "bounced": bounced,
        "out_of_area": out_of_area,
        "second_buyer": second_buyer,
        "retried": retried,
        "capped": capped,
        "late": late,
    }


def store_stories(conn: Connection, flow_id: str) -> dict[str, Story]:
    """The stories of ``flow_id``, plus one lead of another flow that must never count."""
    told = stories(flow_id)
    stray = Story(f"other{flow_id}", "web", BASE_MS).rejected("Missing required field: email", 1)
    every = [e for story in [*told.values(), stray] for e in story.events]
    records = [Record("t", 0, i, CODEC.encode(e)) for i, e in enumerate(every)]
    write_batch(conn, "test", build_batch(CODEC, records))
    return told


@pytest.fixture
def flow(db: Connection, pg_schema: str) -> str:
    store_stories(db, pg_schema)
    return pg_schema


ALL_TIME = TimeRange()


def at(offset_ms: int) -> datetime:
    return datetime.fromtimestamp((BASE_MS + offset_ms) / 1000, UTC)


def test_steps_in_flow_order_with_outcome_rates_and_durations(db: Connection, flow: str) -> None:
    steps = step_analytics(db, flow, ALL_TIME).rows
    assert [s["step_id"] for s in steps] == ["source", "service-area", "premier", "summit"]
    source, area, premier, summit = steps
    assert source == {
        "step_id": "source",
        "step_name": "Source",
        "count": 7,  # decisions: accepted or rejected, never source.submitted
        "success": 5,
        "failure": 2,
        "error": 0,
        "ms_p50": 8.0,  # of 10, 4, 12, 8, 6, 14, 2
        "ms_p95": 13.4,
        "ms_max": 14,
        "success_rate": 0.7143,
        "failure_rate": 0.2857,
        "error_rate": 0.0,
    }
    assert (area["count"], area["success"], area["failure"]) == (5, 4, 1)
    # Each attempt is a decision: the timeout and the retried delivery both count.
    assert (premier["count"], premier["success"], premier["failure"], premier["error"]) == (
        5, 2, 2, 1,
    )  # fmt: skip
    assert (premier["error_rate"], premier["ms_max"]) == (0.2, 5005)
    assert (summit["count"], summit["success_rate"], summit["ms_p50"]) == (2, 0.5, 75.0)


def test_a_time_range_counts_the_events_inside_it(db: Connection, flow: str) -> None:
    day_one = TimeRange(end=at(24 * HOUR_MS))
    [source, *_] = step_analytics(db, flow, day_one).rows
    assert (source["count"], source["failure"]) == (6, 1)
    day_two = TimeRange(start=at(24 * HOUR_MS))
    assert [s["step_id"] for s in step_analytics(db, flow, day_two).rows] == ["source"]
    assert step_analytics(db, "nosuchflow", ALL_TIME).rows == []


def test_rejection_reasons_are_ranked_with_their_share(db: Connection, flow: str) -> None:
    reasons = reason_analytics(db, flow, ALL_TIME).rows
    assert reasons[0] == {
        "reason": "Missing required field: email",
        "step_id": "source",
        "type": "source.rejected",
        "count": 2,
        "share": 0.2857,
    }
    assert [r["count"] for r in reasons] == [2, 1, 1, 1, 1, 1]
    # flow.completed repeats the last reason and retry.scheduled the error: neither counts.
    assert {r["type"] for r in reasons} == {
        "source.rejected", "filter.failed", "recipient.failed", "recipient.error",
    }  # fmt: skip
    premier = reason_analytics(db, flow, ALL_TIME, step_id="premier").rows
    assert [r["reason"] for r in premier] == [
        "Buyer timeout", "Daily cap reached (1/1)", "Duplicate lead",
    ]  # fmt: skip
    assert sum(r["share"] for r in premier) == pytest.approx(1.0, abs=1e-3)
    assert len(reason_analytics(db, flow, ALL_TIME, limit=2).rows) == 2


def test_sources_follow_the_leads_they_submitted_to_cost_revenue_and_profit(
    db: Connection, flow: str
) -> None:
    web, partner = source_analytics(db, flow, ALL_TIME).rows
    assert web == {
        "source_id": "web",
        "source_name": "Web",
        "submitted": 5,
        "accepted": 3,
        "delivered": 1,
        "cost": 7.5,
        "revenue": 30.0,
        "acceptance_rate": 0.6,
        "delivery_rate": 0.3333,
        "profit": 22.5,
    }
    # The retried lead's 25.00 was returned by the buyer: only the other sale counts.
    assert (partner["submitted"], partner["accepted"], partner["delivered"]) == (2, 2, 2)
    assert (partner["cost"], partner["revenue"], partner["profit"]) == (2.0, 20.0, 18.0)


def test_a_source_is_judged_on_the_leads_it_submitted_in_the_range(
    db: Connection, flow: str
) -> None:
    # Only the first lead was submitted in the first minute; its sale came later and counts.
    first_minute = TimeRange(end=at(60_000))
    [web] = source_analytics(db, flow, first_minute).rows
    assert (web["submitted"], web["delivered"], web["revenue"]) == (1, 1, 30.0)


def test_recipients_acceptance_response_times_and_revenue_net_of_returns(
    db: Connection, flow: str
) -> None:
    premier, summit = recipient_analytics(db, flow, ALL_TIME).rows
    assert premier == {
        "step_id": "premier",
        "step_name": "Premier",
        "leads": 4,  # offered: sold, second_buyer, retried, capped
        "accepted": 2,  # sold, and retried on its second attempt
        "acceptance_rate": 0.5,
        "failed": 2,
        "errors": 1,
        # Calls made: 100, 200, 5000 and 300 ms; the capped lead was never sent.
        "response_ms_p50": 250.0,
        "response_ms_p95": 4295.0,
        "returned": 1,
        "revenue": 30.0,
    }
    assert summit == {
        "step_id": "summit",
        "step_name": "Summit",
        "leads": 2,
        "accepted": 1,
        "acceptance_rate": 0.5,
        "failed": 1,
        "errors": 0,
        "response_ms_p50": 65.0,
        "response_ms_p95": 78.5,
        "returned": 0,
        "revenue": 20.0,
    }
