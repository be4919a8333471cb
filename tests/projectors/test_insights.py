"""Seed 002's analytics from the analytics projection: exact figures from a fixed set of
events, the same rows whatever order and batching the events come in, and the same rows
after a blue/green rebuild from the topics, read over HTTP.

Five leads of two sources through a source, a phone-check enhancement and one buyer,
from 2025-11-24T16:00Z: sold and later converted, refused by the buyer after the
enhancement found no data, rejected at the source, sold and returned, and sold after the
enhancement timed out; the first three in the 16:00 hour, the last two in the 17:00 one.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from psycopg import sql

from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import new_lead_id
from engine.settings import Settings
from engine.steps.base import EventDraft, Outcome, Snapshot
from projectors.analytics import ANALYTICS
from projectors.batch import Record, build_batch
from projectors.expiry import expire_analytics
from projectors.generations import current
from projectors.histogram import bucket, percentile
from projectors.insights import (
    buyer_behaviour,
    buyer_hours,
    enhancement_value,
    rejections,
    source_performance,
    step_performance,
)
from projectors.insights_api import router as insights_router
from projectors.params import TimeRange
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_flow
from tests.keys import admin_client

pytestmark = pytest.mark.stack

CODEC = EventCodec()
BASE_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
MINUTE_MS, DAY_MS = 60_000, 86_400_000
STEPS = {"source": 0, "phone-check": 1, "premier": 2, "feedback": 255}
NO_DATA = "Service found no data"
# Every table of analytics migrations 003 and 004, with its key: what a rebuild must equal.
TABLES = (
    ("daily_event_counts", "flow_id, day, step_id, type, outcome, entity_id, reason"),
    ("hourly_step_stats", "flow_id, hour, step_id, type, outcome"),
    ("hourly_durations", "flow_id, hour, step_id, metric, lo"),
    ("hourly_reasons", "flow_id, hour, source_id, step_id, type, reason"),
    ("lead_facts", "flow_id, lead_id"),
    ("lead_enhancements", "flow_id, lead_id, step_id"),
    ("delivery_facts", "flow_id, delivery_id"),
    ("hourly_lead_outcomes", "flow_id, hour, source_id, submitted, accepted, delivered, enhanced"),
)


@dataclass
class Lead:
    """One lead's events, each step stamped ``at_ms`` after its submission."""

    flow_id: str
    source: str
    submitted_ms: int
    lead_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    cost: float = 0.0  # what the steps charged so far: flow.completed repeats it

    def __post_init__(self) -> None:
        self.lead_id = new_lead_id(self.submitted_ms)

    def step(self, step_id: str, at_ms: int, ms: int, *drafts: EventDraft) -> Lead:
        who = StepIdentity(self.flow_id, 1, step_id, step_id.title(), STEPS[step_id], "t", "1")
        snapshot: Snapshot = {
            "lead.id": self.lead_id,
            "submission.timestamp": self.submitted_ms,
            "source.id": self.source,
        }
        start = self.submitted_ms + at_ms
        timing = Timing(start, start + ms, 0)
        self.events += stamp_events(
            list(drafts), who, self.lead_id, self.submitted_ms, snapshot, timing
        )
        return self

    def accepted(self, cost: float, ms: int) -> Lead:
        self.cost += cost
        return self.step(
            "source",
            0,
            ms,
            EventDraft("source.submitted", "success", entity_id=self.source),
            EventDraft("source.accepted", "success", entity_id=self.source, cost=cost),
        )

    def phone_check(
        self, outcome: Outcome, ms: int, cost: float | None, reason: str | None = None
    ) -> Lead:
        kind = {"success": "success", "failure": "failure", "error": "error"}[outcome]
        self.cost += cost or 0.0
        draft = EventDraft(f"enhancement.{kind}", outcome, reason, cost=cost, wait_ms=ms - 2)
        return self.step("phone-check", 100, ms, draft)

    def buyer(
        self,
        outcome: Outcome,
        ms: int,
        wait_ms: int,
        revenue: float = 0.0,
        reason: str = "",
        capped: bool = False,
    ) -> Lead:
        kind = {"success": "delivered", "failure": "failed", "error": "error"}[outcome]
        verdict = EventDraft(
            f"recipient.{kind}", outcome, reason or None, entity_id="premier",
            wait_ms=wait_ms, revenue=revenue, cap_reached=capped or None,
        )  # fmt: skip
        done = EventDraft(
            "flow.completed", outcome, reason or None, cost=self.cost, revenue=revenue
        )
        return self.step("premier", 10_000, ms, verdict, done)

    def feedback(self, kind: str, after_ms: int) -> Lead:
        delivery = next(e for e in self.events if e["type"] == "recipient.delivered")
        fields: Snapshot = {"feedback.type": kind, "feedback.recipient_event_id": delivery["id"]}
        # The feedback comes after_ms after the delivery was recorded.
        at = delivery["timestamp"] - self.submitted_ms + after_ms
        return self.step(
            "feedback",
            at,
            0,
            EventDraft("feedback.received", "success", vars=fields, entity_id="premier"),
            EventDraft("feedback.processed", "success", vars=fields, entity_id="premier"),
        )


def leads(flow_id: str) -> dict[str, Lead]:
    def lead(source: str, minute: int) -> Lead:
        return Lead(flow_id, source, BASE_MS + minute * MINUTE_MS)

    return {
        "converted": lead("web", 0).accepted(2.0, ms=10).phone_check("success", 40, 0.5)
        .buyer("success", 120, wait_ms=100, revenue=30.0).feedback("conversion", 2 * DAY_MS),
        "refused": lead("web", 10).accepted(2.0, ms=20).phone_check("failure", 50, 0.5, NO_DATA)
        .buyer("failure", 210, wait_ms=200, reason="Duplicate lead"),
        "rejected": lead("web", 20).step(
            "source", 0, 4,
            EventDraft("source.submitted", "success", entity_id="web"),
            EventDraft("source.rejected", "failure", "Missing required field: email",
                       entity_id="web"),
            EventDraft("flow.completed", "failure", "Missing required field: email"),
        ),
        "returned": lead("partner", 65).accepted(1.0, ms=6).phone_check("success", 30, 0.5)
        .buyer("success", 310, wait_ms=300, revenue=25.0).feedback("return", DAY_MS),
        "timed_out": lead("partner", 75).accepted(1.0, ms=8)
        .phone_check("error", 5000, None, "Service timeout after 5000ms")
        .buyer("success", 60, wait_ms=50, revenue=20.0),
    }  # fmt: skip


def every_event(flow_id: str) -> list[dict[str, Any]]:
    """The five leads, plus a lead of another flow that must never count."""
    stray = Lead(f"other{flow_id}", "web", BASE_MS).accepted(9.0, ms=1)
    return [e for lead in [*leads(flow_id).values(), stray] for e in lead.events]


def project(conn: Connection, events: list[dict[str, Any]], first_offset: int = 0) -> int:
    records = [Record("t", 0, first_offset + i, CODEC.encode(e)) for i, e in enumerate(events)]
    return write_batch(conn, "analytics", build_batch(CODEC, records), projection=ANALYTICS)


@pytest.fixture
def flow(db: Connection, pg_schema: str) -> str:
    project(db, every_event(pg_schema))
    return pg_schema


ALL_TIME = TimeRange()


def at(minutes: int) -> datetime:
    return datetime.fromtimestamp((BASE_MS + minutes * MINUTE_MS) / 1000, UTC)


def test_step_performance_with_percentages_and_percentiles_from_the_histograms(
    db: Connection, flow: str
) -> None:
    steps = {s["step_id"]: s for s in step_performance(db, flow, ALL_TIME).rows}
    assert list(steps) == ["phone-check", "premier", "source"]
    assert steps["source"] == {
        "step_id": "source",
        "count": 5,  # decisions: accepted or rejected, never source.submitted
        "success": 4,
        "success_pct": 80.0,
        "failure": 1,
        "failure_pct": 20.0,
        "error": 0,
        "error_pct": 0.0,
        "ms_mean": 9.6,  # of 10, 20, 4, 6, 8
        "ms_p50": 8,  # below 32 ms the buckets are exact
        "ms_p95": 20,
        "ms_max": 20,
    }
    check = steps["phone-check"]
    assert (check["success_pct"], check["failure_pct"], check["error_pct"]) == (50.0, 25.0, 25.0)
    # Of 30, 40, 50 and 5000 ms: 40 is in [40, 42), 5000 in [4864, 5120).
    assert (check["ms_mean"], check["ms_p50"], check["ms_p95"], check["ms_max"]) == (
        1280.0, 41, 5119, 5000,
    )  # fmt: skip
    premier = steps["premier"]
    # Of 60, 120, 210 and 310 ms: 120 is in [120, 124), 310 in [304, 320).
    assert (premier["count"], premier["success_pct"], premier["ms_mean"]) == (4, 75.0, 175.0)
    assert (premier["ms_p50"], premier["ms_p95"]) == (123, 319)


def test_step_performance_per_hour(db: Connection, flow: str) -> None:
    rows = step_performance(db, flow, ALL_TIME, per_hour=True).rows
    source = [r for r in rows if r["step_id"] == "source"]
    assert [(r["hour"], r["count"], r["success_pct"]) for r in source] == [
        ("2025-11-24T16:00:00.000Z", 3, 66.67),
        ("2025-11-24T17:00:00.000Z", 2, 100.0),
    ]
    assert [(r["ms_mean"], r["ms_p50"], r["ms_p95"]) for r in source] == [
        (11.3, 10, 20), (7.0, 6, 8),
    ]  # fmt: skip
    # The range takes every hour it overlaps: 16:30 to 17:00 is the 16:00 hour.
    half = step_performance(db, flow, TimeRange(at(30), at(60)), per_hour=True).rows
    assert {r["hour"] for r in half} == {"2025-11-24T16:00:00.000Z"}


def test_rejections_by_source_and_reason_with_percentages(db: Connection, flow: str) -> None:
    rows = rejections(db, flow, ALL_TIME).rows
    assert [(r["source_id"], r["step_id"], r["reason"], r["count"]) for r in rows] == [
        ("partner", "phone-check", "Service timeout after 5000ms", 1),
        ("web", "phone-check", NO_DATA, 1),
        ("web", "premier", "Duplicate lead", 1),
        ("web", "source", "Missing required field: email", 1),
    ]
    assert [(r["pct"], r["pct_of_source"]) for r in rows] == [
        (25.0, 100.0), (25.0, 33.33), (25.0, 33.33), (25.0, 33.33),
    ]  # fmt: skip
    web = rejections(db, flow, ALL_TIME, source_id="web", step_id="premier").rows
    assert [(r["reason"], r["pct"]) for r in web] == [("Duplicate lead", 100.0)]
    assert rejections(db, flow, TimeRange(at(60), at(120))).rows[0]["source_id"] == "partner"


def test_enhancement_value_compares_the_leads_with_and_without_it(
    db: Connection, flow: str
) -> None:
    assert enhancement_value(db, flow, ALL_TIME).rows == [
        {
            "step_id": "phone-check",
            "leads_with": 2,  # converted, returned
            "delivered_with": 2,
            "delivery_pct_with": 100.0,
            "leads_without": 2,  # refused (no data), timed_out (error)
            "delivered_without": 1,
            "delivery_pct_without": 50.0,
            "cost": 1.5,  # 0.5 a call; the timeout cost nothing
            "revenue_with": 30.0,  # the returned lead's 25 was taken back
            "revenue_without": 20.0,
            "revenue_per_lead_with": 15.0,
            "revenue_per_lead_without": 10.0,
            "revenue_difference": 5.0,
        }
    ]


def test_source_performance(db: Connection, flow: str) -> None:
    assert source_performance(db, flow, ALL_TIME).rows == [
        {
            "source_id": "web",
            "submitted": 3,
            "accepted": 2,
            "acceptance_pct": 66.67,
            "enhancement_cost": 1.0,
            "delivered": 1,
            "delivery_pct": 50.0,
            "cost": 5.0,  # 2 + 2 for the source, 0.5 + 0.5 for the phone check
            "revenue": 30.0,
            "profit": 25.0,
        },
        {
            "source_id": "partner",
            "submitted": 2,
            "accepted": 2,
            "acceptance_pct": 100.0,
            "enhancement_cost": 0.5,
            "delivered": 2,
            "delivery_pct": 100.0,
            "cost": 2.5,
            "revenue": 20.0,
            "profit": 17.5,
        },
    ]
    # Leads submitted in the first hour only; the conversion two days later still counts.
    [web] = source_performance(db, flow, TimeRange(at(0), at(60))).rows
    assert (web["submitted"], web["revenue"]) == (3, 30.0)


def test_buyer_behaviour_and_feedback_quality(db: Connection, flow: str) -> None:
    assert buyer_behaviour(db, flow, ALL_TIME).rows == [
        {
            "step_id": "premier",
            "offered": 4,
            "accepted": 3,
            "acceptance_pct": 75.0,
            "failed": 1,
            "failed_pct": 25.0,
            "errors": 0,
            "error_pct": 0.0,
            "calls": 4,
            "response_ms_mean": 162.5,  # of 100, 200, 300 and 50
            "response_ms_p95": 303,  # 300 is in [288, 304)
            "response_ms_max": 300,
            "deliveries": 3,
            "revenue": 50.0,
            "revenue_per_lead": 16.6667,
            "returned": 1,
            "returns_pct": 33.33,
            "converted": 1,
            "conversions_pct": 33.33,
            "days_to_convert": 2.0,
        }
    ]


def test_a_buyers_money_follows_the_deliveries_made_in_the_hours_the_range_overlaps(
    db: Connection, flow: str
) -> None:
    # 16:30-16:45 overlaps the 16:00 hour: the converted lead's sale, not the 17:00 ones.
    [premier] = buyer_behaviour(db, flow, TimeRange(at(30), at(45))).rows
    assert (premier["offered"], premier["deliveries"], premier["revenue"]) == (2, 1, 30.0)
    assert premier["days_to_convert"] == 2.0


def test_buyer_acceptance_by_hour_of_day(db: Connection, flow: str) -> None:
    utc = buyer_hours(db, flow, ALL_TIME).rows
    assert [(r["hour_of_day"], r["offered"], r["accepted"], r["acceptance_pct"]) for r in utc] == [
        (16, 2, 1, 50.0),
        (17, 2, 2, 100.0),
    ]
    chicago = buyer_hours(db, flow, ALL_TIME, "America/Chicago").rows
    assert [r["hour_of_day"] for r in chicago] == [10, 11]


def test_an_hour_a_buyer_accepted_nothing_in_is_0_pct_not_unknown(
    db: Connection, flow: str
) -> None:
    refused = Lead(flow, "web", BASE_MS + 180 * MINUTE_MS).accepted(1.0, ms=5)
    project(db, refused.buyer("failure", 90, wait_ms=80, reason="Duplicate lead").events, 1000)
    last = buyer_hours(db, flow, ALL_TIME).rows[-1]
    assert (last["hour_of_day"], last["offered"], last["accepted"], last["acceptance_pct"]) == (
        19, 1, 0, 0.0,
    )  # fmt: skip


def table_rows(conn: Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                sql.Identifier(schema, table), sql.SQL(order)
            )
        ).fetchall()
        for table, order in TABLES
    }


def test_any_order_batching_and_repetition_gives_the_same_rows(
    db: Connection, pg_schema: str
) -> None:
    events = every_event(pg_schema)
    project(db, events)
    expected = table_rows(db, pg_schema)
    assert all(expected.values())
    # The same events again change nothing ...
    project(db, list(reversed(events)), first_offset=1000)
    assert table_rows(db, pg_schema) == expected
    analytics = current(db, pg_schema, "analytics", "active")
    assert analytics is not None
    shuffled = events + events[:7]
    random.Random(20).shuffle(shuffled)
    # ... and a fresh projection fed them one by one in either order, or shuffled in small
    # batches with some twice, equals it: a lead's events come from several topics.
    for order, size in ((events, 1), (list(reversed(events)), 1), (shuffled, 3)):
        for table in ("counted_events", *(name for name, _ in TABLES)):
            db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(analytics.schema, table)))
        for i in range(0, len(order), size):
            project(db, order[i : i + size], first_offset=2000 + i)
        assert table_rows(db, pg_schema) == expected


def test_retention_prunes_each_table_by_the_flows_days(db: Connection, flow: str) -> None:
    applied = make_flow(flow, "http://127.0.0.1:9/").model_copy(update={"retention_days": 1})
    # On 25 Nov at noon a day's retention has expired 23 Nov and before: nothing of the 24th.
    early = expire_analytics(db, flow, [applied], at(0) + timedelta(hours=20), dry_run=False)
    assert {h.item: h.expired for h in early if h.item in dict(TABLES)} == dict.fromkeys(
        dict(TABLES), 0
    )
    held = {h.item: h.held for h in early}
    assert held["lead_facts"] == 6 and held["delivery_facts"] == 3  # the stray lead too
    # A day later the 24th has expired: its hours, its leads and its deliveries.
    dry = expire_analytics(db, flow, [applied], at(0) + timedelta(days=2), dry_run=True)
    assert {h.item: h.expired for h in dry}["lead_facts"] == 6
    assert all(table_rows(db, flow).values())
    expire_analytics(db, flow, [applied], at(0) + timedelta(days=2), dry_run=False)
    # What is left is the feedback's, on the 25th (the return) and the 26th (the
    # conversion); every per-hour and per-lead row of the 24th is gone, lead_enhancements
    # (kept by their lead's submission) and delivery_facts (by their delivery) included.
    left = table_rows(db, flow)
    assert {t for t, r in left.items() if r} == {"daily_event_counts", "hourly_step_stats"}
    assert {r[1] for r in left["hourly_step_stats"]} == {
        datetime(2025, 11, 25, 17, tzinfo=UTC),
        datetime(2025, 11, 26, 16, tzinfo=UTC),
    }


def test_percentiles_in_sql_are_the_histograms_nearest_rank(db: Connection, pg_schema: str) -> None:
    rng = random.Random(95)
    durations = [int(rng.lognormvariate(4, 1.2)) for _ in range(200)]
    events = [
        e
        for i, ms in enumerate(durations)
        for e in Lead(pg_schema, "web", BASE_MS + i * 1000).accepted(1.0, ms).events
    ]
    project(db, events)
    [source] = step_performance(db, pg_schema, ALL_TIME).rows
    buckets = Counter(bucket(ms) for ms in durations)
    rows = [(lo, hi, n) for (lo, hi), n in buckets.items()]
    assert (source["ms_p50"], source["ms_p95"]) == (percentile(rows, 0.5), percentile(rows, 0.95))
    assert source["ms_p95"] != percentile(rows, 0.9)
    assert source["ms_max"] == max(durations)


def test_the_routes_answer_csv_and_refuse_bad_values_naming_them(
    pg_settings: Settings, flow: str
) -> None:
    app = FastAPI()
    app.state.settings = pg_settings
    app.include_router(insights_router)
    client = admin_client(app)
    csv = client.get(
        f"/flows/{flow}/insights/buyer-hours",
        params={"timezone": "America/Chicago", "format": "csv"},
    )
    assert csv.text.splitlines() == [
        "step_id,hour_of_day,offered,accepted,acceptance_pct",
        "premier,10,2,1,50.0",
        "premier,11,2,2,100.0",
    ]
    hourly = client.get(f"/flows/{flow}/insights/steps", params={"interval": "hour"}).json()
    assert {r["hour"] for r in hourly} == {"2025-11-24T16:00:00.000Z", "2025-11-24T17:00:00.000Z"}
    for route, params, name in [
        ("steps", {"interval": "day"}, "interval"),
        ("steps", {"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end"),
        ("rejections", {"limit": 0}, "limit"),
        ("buyer-hours", {"timezone": "Mars/Olympus"}, "timezone"),
        ("sources", {"bogus": 1}, "bogus"),
    ]:
        answer = client.get(f"/flows/{flow}/insights/{route}", params=params)
        assert answer.status_code == 422, (route, params, answer.text)
        assert answer.json()["detail"][0]["loc"][-1] == name, answer.text


def test_a_lead_refused_for_a_full_cap_was_never_sent_so_it_is_no_call(
    db: Connection, pg_schema: str
) -> None:
    capped = Lead(pg_schema, "web", BASE_MS).accepted(1.0, ms=5)
    capped.buyer("failure", 2, wait_ms=0, reason="Daily cap reached (1/1)", capped=True)
    sent = Lead(pg_schema, "web", BASE_MS + 1000).accepted(1.0, ms=5)
    sent.buyer("success", 90, wait_ms=80, revenue=10.0)
    project(db, capped.events + sent.events)
    [premier] = buyer_behaviour(db, pg_schema, ALL_TIME).rows
    assert (premier["offered"], premier["failed"], premier["calls"]) == (2, 1, 1)
    assert (premier["response_ms_mean"], premier["response_ms_p95"]) == (80.0, 83)  # [80, 84)


def test_two_projector_instances_writing_one_leads_events_at_once_sum_up_right(
    db: Connection, pg_settings: Settings, pg_schema: str
) -> None:
    """A lead's steps are different topics, so two members of the analytics group can hold
    its events at once: each event its own transaction, both sides in parallel."""
    events = every_event(pg_schema)
    project(db, events)
    expected = table_rows(db, pg_schema)
    analytics = current(db, pg_schema, "analytics", "active")
    assert analytics is not None
    for table in ("counted_events", *(name for name, _ in TABLES)):
        db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(analytics.schema, table)))
    early = {"source", "phone-check"}
    halves = [[e for e in events if (e["step_id"] in early) == side] for side in (True, False)]
    errors: list[BaseException] = []

    def member(half: list[dict[str, Any]], offset: int) -> None:
        try:
            with connect(pg_settings) as conn:
                for i, event in enumerate(half):
                    project(conn, [event], first_offset=offset + i)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(h, 1000 * n)) for n, h in enumerate(halves)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert table_rows(db, pg_schema) == expected
