"""When a schedule is due, how long a retry waits, which destinations a schedule may name,
and a flow file's ``exports:``: plain values, no stack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from engine.export_schedules import checked_cron
from engine.flows import Flow
from projectors.exports.scheduler import backoff_s
from projectors.exports.schedules import ScheduleRequest, latest_due
from tests.factories import make_flow


def at(hh: int, mm: int, ss: int = 0, day: int = 5) -> datetime:
    return datetime(2026, 12, day, hh, mm, ss, tzinfo=UTC)


def test_a_schedule_is_due_from_its_time_on_and_not_a_second_before() -> None:
    hourly = "0 * * * *"
    assert latest_due(hourly, at(10, 0), at(10, 59, 59)) is None
    assert latest_due(hourly, at(10, 0), at(11, 0)) == at(11, 0)
    assert latest_due(hourly, at(10, 0), at(11, 0, 30)) == at(11, 0)


def test_a_time_already_queued_is_not_due_again() -> None:
    assert latest_due("0 * * * *", at(11, 0), at(11, 30)) is None


def test_after_missed_times_only_the_latest_is_due() -> None:
    assert latest_due("*/15 * * * *", at(10, 0), at(13, 20)) == at(13, 15)
    assert latest_due("30 2 * * *", at(3, 0, day=1), at(1, 0, day=5)) == at(2, 30, day=4)


def test_times_are_utc_whatever_zone_the_clock_gives() -> None:
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 12, 5, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 11:00 UTC
    assert latest_due("0 11 * * *", at(10, 0), berlin) == at(11, 0)


def test_a_bad_cron_expression_is_refused_with_its_text() -> None:
    assert checked_cron("0 2 * * 1-5") == "0 2 * * 1-5"
    with pytest.raises(ValueError, match="'every day'"):
        checked_cron("every day")
    with pytest.raises(ValidationError, match="not a cron expression"):
        ScheduleRequest.model_validate({"cron": "61 * * * *", "destination": {"kind": "local"}})


def test_retries_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    assert [backoff_s(n, 30, 100) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


@pytest.mark.parametrize("path", ["../elsewhere", "a/../../b", "/etc/cron.d"])
def test_a_local_destination_stays_inside_the_configured_folder(path: str) -> None:
    with pytest.raises(ValidationError, match=r"relative, without '\.\.'"):
        ScheduleRequest.model_validate(
            {"cron": "* * * * *", "destination": {"kind": "local", "path": path}}
        )


def test_destinations_are_s3_azure_or_local_and_nothing_else() -> None:
    ok = ScheduleRequest.model_validate(
        {"cron": "* * * * *", "destination": {"kind": "local", "path": "daily//csv/"}}
    )
    assert ok.destination.model_dump() == {"kind": "local", "path": "daily/csv"}
    with pytest.raises(ValidationError):
        ScheduleRequest.model_validate(
            {"cron": "* * * * *", "destination": {"kind": "ftp", "bucket": "abc"}}
        )


def flow_with(exports: list[dict[str, Any]]) -> Flow:
    definition = make_flow("scheduled", "http://127.0.0.1:9/leads").model_dump(mode="json")
    return Flow.model_validate({**definition, "exports": exports})


def test_a_flow_file_declares_scheduled_exports_checked_when_it_is_loaded() -> None:
    flow = flow_with([{"id": "nightly", "cron": "0 2 * * *",
                       "destination": {"kind": "s3", "bucket": "reports"},
                       "filters": {"type": ["flow.completed"], "format": "jsonl"}}])  # fmt: skip
    (export,) = flow.exports
    assert export.clear_text is False and export.max_attempts == 3
    assert export.filters.type == ("flow.completed",)
    for bad, message in (
        ({"cron": "at two"}, "not a cron expression"),
        ({"destination": {"kind": "local", "path": "../x"}}, "relative, without"),
        ({"filters": {"flow_id": "other"}}, "Extra inputs are not permitted"),
    ):
        base = {"id": "nightly", "cron": "0 2 * * *", "destination": {"kind": "local"}}
        with pytest.raises(ValidationError, match=message):
            flow_with([base | bad])
    with pytest.raises(ValidationError, match="ids must be unique"):
        flow_with([{"id": "a", "cron": "0 2 * * *", "destination": {"kind": "local"}}] * 2)
