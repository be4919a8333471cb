"""Retention decisions (engine.retention): which partitions to make and drop, cut-offs,
and the topics' retention.ms, as pure functions of the flows and a time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from engine.events import RETENTION_MS, StepIdentity, Timing, stamp_events
from engine.flows import Flow
from engine.retention import (
    DayPartition,
    cutoff,
    flow_topic_retention,
    last_expired_day,
    longest_retention_ms,
    partition_of,
    partitions_to_drop,
    partitions_to_make,
    topic_retention,
)
from engine.steps.base import EventDraft
from engine.topics import flow_topics
from tests.factories import make_flow, make_lead_events

NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DAY_MS = 86_400_000


def flow(flow_id: str, days: float | None = None) -> Flow:
    base = make_flow(flow_id, "http://127.0.0.1:9/leads")
    return base if days is None else base.model_copy(update={"retention_days": days})


def test_a_flow_keeps_its_data_90_days_unless_it_says_otherwise() -> None:
    assert flow("a").retention_ms == 90 * DAY_MS == RETENTION_MS
    assert flow("a", 1 / 1440).retention_ms == 60_000  # a minute


def test_every_topic_of_a_flow_takes_its_retention() -> None:
    f = flow("a", 7)
    assert flow_topic_retention(f) == {t: 7 * DAY_MS for t in flow_topics(f)}


def test_shared_topics_keep_the_longest_retention_of_the_flows() -> None:
    plan = topic_retention([flow("a", 7), flow("b", 30)], ["leadflow.feedback"])
    assert plan["leadflow.feedback"] == 30 * DAY_MS
    assert plan["leadflow.a.intake"] == 7 * DAY_MS
    assert plan["leadflow.b.intake"] == 30 * DAY_MS


def test_with_no_flows_the_default_retention_holds() -> None:
    assert longest_retention_ms([]) == RETENTION_MS
    assert topic_retention([], ["leadflow.feedback"]) == {"leadflow.feedback": RETENTION_MS}


def test_a_partition_covers_one_utc_day_and_is_named_for_it() -> None:
    p = DayPartition(date(2026, 12, 5))
    assert p.name == "events_p20261205"
    assert p.start == datetime(2026, 12, 5, tzinfo=UTC)
    assert p.end == datetime(2026, 12, 6, tzinfo=UTC)
    assert partition_of("events_p20261205") == p


def test_tables_that_are_not_day_partitions_are_not_taken_for_one() -> None:
    assert partition_of("events") is None
    assert partition_of("events_p2026120") is None
    assert partition_of("events_p20261332") is None
    assert partition_of("leads") is None


def test_yesterday_today_and_a_week_ahead_are_made() -> None:
    days = [p.day for p in partitions_to_make(NOON)]
    assert days[0] == date(2026, 12, 4)
    assert days[-1] == date(2026, 12, 12)
    assert days == [date(2026, 12, 4) + timedelta(days=n) for n in range(9)]


def test_the_day_to_make_is_the_utc_day_whatever_the_time_zone() -> None:
    late_in_chicago = datetime(2026, 12, 5, 23, 30, tzinfo=UTC).astimezone(
        datetime.now().astimezone().tzinfo
    )
    assert partitions_to_make(late_in_chicago, ahead_days=0)[1].day == date(2026, 12, 5)


def test_a_partition_is_dropped_only_once_its_every_row_has_expired() -> None:
    held = [DayPartition(date(2026, 12, d)) for d in range(1, 6)]
    # One day's retention at noon on the 5th: the cut-off is noon on the 4th. The 3rd ends
    # at midnight before it and goes; the 4th holds rows after the cut-off and stays.
    dropped = partitions_to_drop(held, NOON, DAY_MS)
    assert [p.day for p in dropped] == [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)]


def test_a_partition_ending_exactly_at_the_cut_off_is_dropped() -> None:
    midnight = datetime(2026, 12, 5, tzinfo=UTC)
    held = [DayPartition(date(2026, 12, 3)), DayPartition(date(2026, 12, 4))]
    assert [p.day for p in partitions_to_drop(held, midnight, DAY_MS)] == [date(2026, 12, 3)]


def test_nothing_is_dropped_within_the_retention() -> None:
    held = [DayPartition(date(2026, 12, d)) for d in range(1, 6)]
    assert partitions_to_drop(held, NOON, 90 * DAY_MS) == []


def test_the_cut_off_and_the_last_expired_day() -> None:
    assert cutoff(NOON, DAY_MS) == datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert last_expired_day(NOON, DAY_MS) == date(2026, 12, 3)
    assert last_expired_day(datetime(2026, 12, 5, tzinfo=UTC), DAY_MS) == date(2026, 12, 3)


def test_an_event_expires_its_flows_retention_after_it_happened() -> None:
    who = StepIdentity("a", 1, "source", "Source", 0, "host", "0", retention_ms=7 * DAY_MS)
    [event] = stamp_events(
        [EventDraft("source.submitted", "success")], who, "L", 1_000, {}, Timing(1_000, 1_005, 0)
    )
    assert event["expires_at"] == 1_005 + 7 * DAY_MS


def test_by_default_an_event_expires_after_90_days() -> None:
    [event] = make_lead_events()[:1]
    assert event["expires_at"] - event["timestamp"] == RETENTION_MS
