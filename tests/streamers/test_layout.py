"""Specification of where events land: lead and time layouts, batched object names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.objects.contract import directory, normalise_prefix
from streamers import layout

LEAD = "01KAQ3Z0000000000000000000"
EVENT = "01KAQ3Z00000000000000000AB"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ""),
        ("/", ""),
        ("demo", "demo"),
        ("/demo/", "demo"),
        ("a//b///c/", "a/b/c"),
        ("events/2025", "events/2025"),
    ],
)
def test_prefix_is_normalised_without_duplicate_slashes(prefix: str, expected: str) -> None:
    assert normalise_prefix(prefix) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", f"{LEAD}/{EVENT}.json"),
        ("/", f"{LEAD}/{EVENT}.json"),
        ("demo", f"demo/{LEAD}/{EVENT}.json"),
        ("demo/", f"demo/{LEAD}/{EVENT}.json"),
        ("/tenants//acme/", f"tenants/acme/{LEAD}/{EVENT}.json"),
    ],
)
def test_event_key_is_prefix_lead_event(prefix: str, expected: str) -> None:
    assert layout.event_key(prefix, LEAD, EVENT) == expected


def test_event_key_is_deterministic() -> None:
    assert layout.event_key("p", LEAD, EVENT) == layout.event_key("p/", LEAD, EVENT)


@pytest.mark.parametrize("bad", ["", "a/b", ".", ".."])
def test_ids_that_would_move_the_object_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="key segment"):
        layout.event_key("p", bad, EVENT)
    with pytest.raises(ValueError, match="key segment"):
        layout.event_key("p", LEAD, bad)


def test_directory_ends_with_one_slash_so_listing_does_not_match_siblings() -> None:
    assert directory("demo") == "demo/"
    assert directory("/demo//") == "demo/"
    assert directory("") == ""


def test_dead_letter_key_names_the_kafka_position_zero_padded() -> None:
    key = layout.dead_letter_key("demo/", "leadflow.f.events.source", 2, 42)
    assert key == "demo/_dead_letter/leadflow.f.events.source+2+0000000000000000042.bin"
    assert layout.dead_letter_key("", "t", 0, 0) == "_dead_letter/t+0+0000000000000000000.bin"


def test_dead_letter_keys_are_recognised_and_event_keys_are_not() -> None:
    assert layout.is_dead_letter_key("demo", layout.dead_letter_key("demo", "t", 0, 1))
    assert not layout.is_dead_letter_key("demo", layout.event_key("demo", LEAD, EVENT))


def test_time_layout_partitions_by_flow_and_the_events_own_utc_date_and_hour() -> None:
    at = datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=UTC)
    key = layout.time_event_key("/p/", "demo", at, LEAD, EVENT)
    assert key == f"p/flow_id=demo/dt=2026-03-01/hour=23/{LEAD}/{EVENT}.json"


def test_time_layout_converts_an_offset_timestamp_to_utc() -> None:
    # 01:30 at UTC+2 is 23:30 UTC the day before.
    at = datetime(2026, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert layout.time_partition("demo", at) == "flow_id=demo/dt=2026-03-01/hour=23"


def test_a_batched_object_is_named_by_topic_partition_and_first_offset_zero_padded() -> None:
    at = datetime(2026, 3, 1, 7, 5, tzinfo=UTC)
    key = layout.batch_key("p", "demo", at, "leadflow.demo.events.source", 2, 42, "jsonl.gz")
    assert key == (
        "p/flow_id=demo/dt=2026-03-01/hour=07/"
        "leadflow.demo.events.source+2+0000000000000000042.jsonl.gz"
    )


def test_a_verification_probe_left_by_a_killed_process_is_not_an_event_object() -> None:
    probe = "demo/leadflow_verification_f1_20261124125111696.txt"
    assert layout.is_verification_key("demo", probe)
    assert not layout.is_verification_key("demo", "demo/L1/leadflow_verification_x.txt")
    assert not layout.is_verification_key("demo", "demo/L1/E1.json")
