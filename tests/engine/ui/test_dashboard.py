"""The dashboard's figures, read from the daily aggregate for whole days and from events for
the partial days at a range's edges, are the figures the events themselves give."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from engine.settings import Settings
from engine.ui.dashboard import dashboard, split
from projectors.analytics import ANALYTICS
from projectors.batch import Record, build_batch
from projectors.generations import migrate
from projectors.params import TimeRange
from projectors.stats import (
    VERDICT_TYPES,
    StatsQuery,
    event_stats,
    reason_analytics,
    recipient_analytics,
    source_analytics,
    step_analytics,
)
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.projectors.test_analytics import stories

pytestmark = pytest.mark.stack

CODEC = EventCodec()


@pytest.fixture
def db(stack: Settings, unique_id: str) -> Iterator[Connection]:
    """The seven leads of ``tests/projectors/test_analytics.py`` in both projections."""
    url = stack.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(unique_id)))
    try:
        with connect(stack.model_copy(update={"db_schema": unique_id})) as conn:
            migrate(conn, unique_id)
            events = [e for story in stories(unique_id).values() for e in story.events]
            records = [
                Record("leadflow.f.events.x", 0, i, CODEC.encode(e), e["lead_id"].encode())
                for i, e in enumerate(events)
            ]
            batch = build_batch(CODEC, records)
            write_batch(conn, "timeline", batch)
            write_batch(conn, "analytics", batch, projection=ANALYTICS)
            yield conn
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (unique_id + "%",)
            ).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _flow(db: Connection) -> str:
    row = db.execute("SELECT DISTINCT flow_id FROM events").fetchone()
    assert row is not None
    return str(row[0])


# Leads at 16:00Z-16:05Z on 2025-11-24, one more at 16:00Z the next day. The first range
# cuts 24 Nov after the third lead (its last three leads come from events) and takes 25-27
# Nov whole (from the aggregate); the second is two whole days; the third is hourly.
RANGES = [
    ("2025-11-24T16:02:30", "2025-11-28T00:00:00"),
    ("2025-11-24T00:00:00", "2025-11-26T00:00:00"),
    ("2025-11-24T16:02:30", "2025-11-25T18:00:00"),
]


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_the_dashboard_says_what_the_events_say(db: Connection, start: str, end: str) -> None:
    flow = _flow(db)
    when = TimeRange(_at(start), _at(end))
    got = dashboard(db, flow, when)
    interval = got["interval"]
    outcomes = event_stats(
        db,
        StatsQuery(("outcome",), interval, when=when, flow_id=flow, types=("flow.completed",)),
    )
    assert got["outcomes"] == outcomes.rows
    assert got["reasons"] == reason_analytics(db, flow, when, None, 10).rows
    assert got["sources"] == source_analytics(db, flow, when).rows
    assert got["recipients"] == recipient_analytics(db, flow, when).rows
    exact = step_analytics(db, flow, when).rows
    # Fewer decisions than the sample: the sampled percentiles are the exact ones.
    assert got["duration_sample"]["rows"] == sum(s["count"] for s in exact)
    assert [{k: s[k] for k in exact[0]} for s in got["steps"]] == exact
    means = db.execute(
        "SELECT step_id, round(avg(ms), 1)::float8 FROM events WHERE flow_id = %s"
        " AND type = ANY(%s) AND ts >= %s AND ts < %s GROUP BY 1",
        (flow, list(VERDICT_TYPES), when.start, when.end),
    ).fetchall()
    assert {s["step_id"]: s["ms_mean"] for s in got["steps"]} == dict(means)


def test_whole_days_come_from_the_aggregate_alone(db: Connection) -> None:
    """Change the aggregate and the whole days' figures follow it: they are read from there."""
    flow = _flow(db)
    when = TimeRange(_at("2025-11-24T00:00:00"), _at("2025-11-27T00:00:00"))
    before = dashboard(db, flow, when)
    db.execute("UPDATE daily_event_counts SET events = events * 10 WHERE type = 'flow.completed'")
    after = dashboard(db, flow, when)
    db.rollback()
    assert [r["count"] * 10 for r in before["outcomes"]] == [r["count"] for r in after["outcomes"]]
    assert after["days"] == {"start": "2025-11-24", "end": "2025-11-27", "count": 3}


def test_a_range_is_cut_at_its_first_and_last_utc_midnight() -> None:
    cut = split(_at("2025-11-24T16:00:00"), _at("2025-11-28T06:00:00"))
    assert (cut.first_day.isoformat(), cut.end_day.isoformat()) == ("2025-11-25", "2025-11-28")
    assert cut.head == (_at("2025-11-24T16:00:00"), _at("2025-11-25T00:00:00"))
    assert cut.tail == (_at("2025-11-28T00:00:00"), _at("2025-11-28T06:00:00"))
    whole = split(_at("2025-11-24T00:00:00"), _at("2025-11-26T00:00:00"))
    assert whole.head[0] == whole.head[1] and whole.tail[0] == whole.tail[1]
    inside = split(_at("2025-11-24T01:00:00"), _at("2025-11-24T05:00:00"))
    assert inside.first_day == inside.end_day  # no whole day: all from events
    assert inside.head == (_at("2025-11-24T01:00:00"), _at("2025-11-24T05:00:00"))
