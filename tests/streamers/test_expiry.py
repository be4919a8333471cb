"""Which objects have expired, read from their keys (streamers.expiry.object_time)."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.ids import event_id, new_lead_id
from streamers.expiry import LEAD_LAYOUT_GRACE, object_time
from streamers.layout import batch_key, dead_letter_key, event_key, time_event_key

AT = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
MS = int(AT.timestamp() * 1000)
LEAD = new_lead_id(MS)
EVENT = event_id(LEAD, MS, 0, 0, 1)


def test_a_time_layout_object_ends_with_its_events_utc_day() -> None:
    key = time_event_key("p", "f", AT, LEAD, EVENT)
    assert object_time("p", key) == datetime(2026, 12, 2, tzinfo=UTC)


def test_a_batched_object_ends_with_its_day_too() -> None:
    key = batch_key("p", "f", AT, "leadflow.f.events.source", 0, 42, "jsonl.gz")
    assert object_time("p", key) == datetime(2026, 12, 2, tzinfo=UTC)


def test_a_lead_layout_object_is_dated_by_its_event_id_with_a_day_of_grace() -> None:
    assert object_time("p", event_key("p", LEAD, EVENT)) == AT + LEAD_LAYOUT_GRACE


def test_dead_letters_and_strangers_are_never_expired_by_key() -> None:
    assert object_time("p", dead_letter_key("p", "t", 0, 1)) is None
    assert object_time("p", "p/notes.txt") is None
    assert object_time("p", "p/x/dt=2026-13-45/y.json") is None
