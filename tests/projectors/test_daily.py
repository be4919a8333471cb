"""The analytics projection: events counted once per UTC day, whatever is read twice,
and read back over HTTP with the same totals as counting the raw events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from engine.settings import Settings
from projectors.analytics import ANALYTICS
from projectors.batch import Batch, Record, build_batch
from projectors.stats_api import router as stats_router
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events
from tests.keys import admin_client

pytestmark = pytest.mark.stack

CODEC = EventCodec()
DAY_1 = int(datetime(2026, 3, 1, 23, 0, tzinfo=UTC).timestamp() * 1000)
DAY_2 = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp() * 1000)


def batch_of(events: list[dict[str, Any]], first_offset: int = 0) -> Batch:
    records = [
        Record("leadflow.f.events.x", 0, first_offset + i, CODEC.encode(e), e["lead_id"].encode())
        for i, e in enumerate(events)
    ]
    return build_batch(CODEC, records)


@pytest.fixture
def events(pg_schema: str) -> list[dict[str, Any]]:
    return [
        *[e for _ in range(3) for e in make_lead_events(flow_id=pg_schema, submitted_ms=DAY_1)],
        *[e for _ in range(2) for e in make_lead_events(flow_id=pg_schema, submitted_ms=DAY_2)],
    ]


def counted(conn: Connection) -> dict[tuple[str, str, str], int]:
    rows = conn.execute(
        "SELECT day::text, type, outcome, events FROM daily_event_counts"
    ).fetchall()
    return {(day, type_, outcome): int(n) for day, type_, outcome, n in rows}


def expected(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter(
        (
            datetime.fromtimestamp(e["timestamp"] / 1000, UTC).date().isoformat(),
            e["type"],
            e["outcome"],
        )
        for e in events
    )


def test_events_are_counted_per_utc_day_of_their_own_time(
    db: Connection, events: list[dict[str, Any]]
) -> None:
    assert write_batch(db, "analytics", batch_of(events), projection=ANALYTICS) == len(events)

    assert counted(db) == expected(events)
    cost, revenue = db.execute("SELECT sum(cost), sum(revenue) FROM daily_event_counts").fetchone()
    assert float(cost) == sum(e["cost"] or 0 for e in events)
    assert float(revenue) == sum(e["revenue"] or 0 for e in events)


def test_an_event_read_again_anywhere_is_not_counted_again(
    db: Connection, events: list[dict[str, Any]]
) -> None:
    write_batch(db, "analytics", batch_of(events[:7]), projection=ANALYTICS)
    # A replayed step re-records its events under the same ids, at other offsets;
    # a batch may also hold one event twice.
    again = batch_of([*events[3:], events[-1]], first_offset=100)

    assert write_batch(db, "analytics", again, projection=ANALYTICS) == len(events) - 7
    assert counted(db) == expected(events)


def test_the_daily_route_answers_the_totals_raw_counting_gives(
    pg_settings: Settings, db: Connection, events: list[dict[str, Any]], pg_schema: str
) -> None:
    write_batch(db, "analytics", batch_of(events), projection=ANALYTICS)
    write_batch(db, "timeline", batch_of(events))
    app = FastAPI()
    app.state.settings = pg_settings
    app.include_router(stats_router)
    client = admin_client(app)

    daily = client.get(
        f"/flows/{pg_schema}/analytics/daily", params={"group_by": "type,outcome"}
    ).json()
    raw = client.get(
        "/events/stats",
        params={"flow_id": pg_schema, "interval": "day", "group_by": "type,outcome"},
    ).json()

    assert [(r["day"], r["type"], r["outcome"], r["events"]) for r in daily] == [
        (r["bucket"][:10], r["type"], r["outcome"], r["count"]) for r in raw
    ]
    one_day = client.get(
        f"/flows/{pg_schema}/analytics/daily", params={"start": "2026-03-02", "end": "2026-03-03"}
    ).json()
    assert one_day == [
        {
            "day": "2026-03-02",
            "events": 10,
            "ms_mean": one_day[0]["ms_mean"],
            "ms_max": one_day[0]["ms_max"],
            "cost": 2 * 2.5,
            "revenue": 2 * 30.0,
        }
    ]
    bad = client.get(f"/flows/{pg_schema}/analytics/daily", params={"group_by": "planet"})
    assert bad.status_code == 422 and "planet" in bad.text
