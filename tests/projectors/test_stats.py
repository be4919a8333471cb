"""Event counts per group and per time bucket, buckets cut in the caller's time zone."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from projectors import stats
from projectors.batch import Record, build_batch
from projectors.params import TimeRange
from projectors.stats import StatsQuery, TooManyRowsError, event_stats
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events
from tests.projectors.test_analytics import Story, store_stories

pytestmark = pytest.mark.stack


@pytest.fixture
def told(db: Connection, pg_schema: str) -> dict[str, Story]:
    return store_stories(db, pg_schema)


def events_of(told: dict[str, Story]) -> list[dict[str, Any]]:
    return [e for story in told.values() for e in story.events]


def counts(conn: Connection, query: StatsQuery, *keys: str) -> dict[tuple[object, ...], int]:
    return {tuple(row[k] for k in keys): row["count"] for row in event_stats(conn, query).rows}


def test_without_groups_or_interval_one_row_counts_the_flows_events(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    table = event_stats(db, StatsQuery(flow_id=pg_schema))
    assert table.columns == ("count",)
    assert table.rows == [{"count": len(events_of(told))}]


def test_counts_per_type_and_outcome_in_key_order(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    table = event_stats(db, StatsQuery(group_by=("type", "outcome"), flow_id=pg_schema))
    assert table.columns == ("type", "outcome", "count")
    expected = Counter((e["type"], e["outcome"]) for e in events_of(told))
    assert [(r["type"], r["outcome"], r["count"]) for r in table.rows] == [
        (*key, n) for key, n in sorted(expected.items())
    ]


def test_counts_per_source_step_recipient_and_reason(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    every = events_of(told)
    by_source = counts(db, StatsQuery(group_by=("source",), flow_id=pg_schema), "source")
    assert by_source == Counter((e["vars"]["source.id"],) for e in every)
    by_step = counts(db, StatsQuery(group_by=("step",), flow_id=pg_schema), "step")
    assert by_step == Counter((e["step_id"],) for e in every)
    sales = StatsQuery(group_by=("recipient",), flow_id=pg_schema, types=["recipient.delivered"])
    assert counts(db, sales, "recipient") == {("premier",): 2, ("summit",): 1}
    # Feedback counts for the recipient whose delivery it is about; other steps have none.
    everything = counts(db, StatsQuery(group_by=("recipient",), flow_id=pg_schema), "recipient")
    assert everything[("premier",)] == 5 + 2
    refusals = StatsQuery(group_by=("reason",), flow_id=pg_schema, types=["source.rejected"])
    assert counts(db, refusals, "reason") == {("Missing required field: email",): 2}


def test_day_buckets_start_at_midnight_where_the_caller_is_and_are_named_in_utc(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    # The leads arrive at 16:00Z on the 24th (10:00 in Chicago, 01:00 on the 25th in
    # Tokyo), the last one a day later.
    day_one, day_two = len(events_of(told)) - 3, 3
    for zone, first_bucket, second_bucket in [
        ("UTC", "2025-11-24T00:00:00.000Z", "2025-11-25T00:00:00.000Z"),
        ("America/Chicago", "2025-11-24T06:00:00.000Z", "2025-11-25T06:00:00.000Z"),
        ("Asia/Tokyo", "2025-11-24T15:00:00.000Z", "2025-11-25T15:00:00.000Z"),
    ]:
        query = StatsQuery(interval="day", timezone=zone, flow_id=pg_schema)
        assert event_stats(db, query).rows == [
            {"bucket": first_bucket, "count": day_one},
            {"bucket": second_bucket, "count": day_two},
        ], zone


def test_week_month_and_hour_buckets(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    def buckets(interval: stats.Interval) -> list[str]:
        query = StatsQuery(interval=interval, flow_id=pg_schema)
        return [row["bucket"] for row in event_stats(db, query).rows]

    assert buckets("week") == ["2025-11-24T00:00:00.000Z"]  # a Monday: weeks start on Mondays
    assert buckets("month") == ["2025-11-01T00:00:00.000Z"]
    assert buckets("hour") == ["2025-11-24T16:00:00.000Z", "2025-11-25T16:00:00.000Z"]


def test_the_local_day_a_clock_change_lengthens_is_one_25_hour_bucket(db: Connection) -> None:
    # New York leaves daylight time on 2025-11-02: that local day runs 04:00Z to 05:00Z next day.
    codec = EventCodec()
    times = [datetime(2025, 11, 2, 4, 30, tzinfo=UTC), datetime(2025, 11, 3, 4, 30, tzinfo=UTC)]
    events = [make_lead_events("dst", submitted_ms=int(t.timestamp() * 1000))[0] for t in times]
    write_batch(
        db, "test", build_batch(codec, [Record("t", 0, 0, codec.encode(e)) for e in events])
    )
    query = StatsQuery(interval="day", timezone="America/New_York", flow_id="dst")
    assert event_stats(db, query).rows == [{"bucket": "2025-11-02T04:00:00.000Z", "count": 2}]


def test_the_time_range_is_start_inclusive_end_exclusive(
    db: Connection, told: dict[str, Story], pg_schema: str
) -> None:
    late = told["late"].events
    start = datetime.fromtimestamp(late[0]["timestamp"] / 1000, UTC)
    query = StatsQuery(flow_id=pg_schema, when=TimeRange(start=start))
    assert event_stats(db, query).rows == [{"count": len(late)}]
    query = StatsQuery(flow_id=pg_schema, when=TimeRange(end=start))
    assert event_stats(db, query).rows == [{"count": len(events_of(told)) - len(late)}]


def test_an_answer_over_the_row_limit_is_refused_not_cut(
    db: Connection, told: dict[str, Story], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "MAX_STATS_ROWS", 2)
    with pytest.raises(TooManyRowsError, match="more than 2 rows"):
        event_stats(db, StatsQuery(group_by=("type",), flow_id=pg_schema))
