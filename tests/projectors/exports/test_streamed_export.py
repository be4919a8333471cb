"""Streamed exports over HTTP: every selected event, in id order, as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from engine.api.app import create_app
from engine.settings import Settings
from projectors.exports.formats import CSV_HEADER
from schemas.codec import event_to_json_dict
from tests.keys import admin_client
from tests.projectors.exports.conftest import (
    BASE_MS,
    FORMULA_EMAIL,
    FORMULA_FIRST_NAME,
    FORMULA_REASON,
    Event,
    api,
)

pytestmark = pytest.mark.stack


def csv_rows(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    assert tuple(rows[0]) == CSV_HEADER
    return [dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]]


def jsonl_events(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line) for line in answer.text.splitlines()]


def number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def expected_row(event: Event) -> dict[str, str]:
    """The CSV row of one event, as documented in projectors/exports/formats.py (before the
    formula guard, which the injection test checks on its own)."""
    json = event_to_json_dict(event)
    lead = event["vars"]
    return {
        "event_id": event["id"],
        "lead_id": event["lead_id"],
        "time": json["timestamp"],
        "flow_id": event["flow_id"],
        "flow_version": str(event["flow_version"]),
        "step_id": event["step_id"],
        "step_name": event["step_name"] or "",
        "type": event["type"],
        "outcome": event["outcome"],
        "reason": event["reason"] or "",
        "ms": str(event["ms"]),
        "total_ms": str(event["total_ms"]),
        "cost": number(event["cost"]),
        "revenue": number(event["revenue"]),
        **{
            field: str(lead.get(field) or "")
            for field in CSV_HEADER
            if field.startswith("lead.")
        },
    }  # fmt: skip


def defused(row: dict[str, str]) -> dict[str, str]:
    return {k: "'" + v if v[:1] in ("=", "+", "-", "@") else v for k, v in row.items()}


# -- content ----------------------------------------------------------------------------


def test_jsonl_is_every_event_of_the_flow_in_id_order_as_stored(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/events/export", params={"format": "jsonl"})
    assert jsonl_events(answer) == [event_to_json_dict(e) for e in flow_events]
    assert answer.headers["content-type"] == "application/x-ndjson"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="leadflow-events-{pg_schema}-')
    assert disposition.endswith('.jsonl"')


def test_csv_has_the_documented_columns_and_one_row_per_event(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/events/export", params={"format": "csv"})
    assert csv_rows(answer) == [defused(expected_row(e)) for e in flow_events]
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].endswith('.csv"')
    assert answer.content.startswith(b"event_id,lead_id,time,") and b"\r\n" in answer.content


def test_csv_is_the_default_format(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    assert len(csv_rows(client.get(f"/flows/{pg_schema}/events/export"))) == len(flow_events)


def test_formula_like_lead_fields_and_reasons_are_neutralised_in_csv(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    rows = csv_rows(client.get(f"/flows/{pg_schema}/events/export"))
    first_lead = [r for r in rows if r["lead_id"] == flow_events[0]["lead_id"]]
    assert {r["lead.first_name"] for r in first_lead} == {"'" + FORMULA_FIRST_NAME}
    assert {r["lead.email"] for r in first_lead} == {"'" + FORMULA_EMAIL}
    assert [r["reason"] for r in rows if r["type"] == "recipient.failed"] == ["'" + FORMULA_REASON]
    # What Postgres computed is no formula and keeps its sign and value.
    assert {r["cost"] for r in rows if r["type"] == "source.accepted"} == {"2.5"}
    # JSON lines are data, not a spreadsheet: the values stay as typed.
    events = jsonl_events(
        client.get(f"/flows/{pg_schema}/events/export", params={"format": "jsonl"})
    )
    assert events[0]["vars"]["lead.first_name"] == FORMULA_FIRST_NAME


def test_events_export_spans_flows_unless_one_is_given(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    everything = jsonl_events(client.get("/events/export", params={"format": "jsonl"}))
    assert {e["flow_id"] for e in everything} == {pg_schema, f"other{pg_schema}"}
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    one_flow = client.get("/events/export", params={"format": "jsonl", "flow_id": pg_schema})
    assert [e["id"] for e in jsonl_events(one_flow)] == [e["id"] for e in flow_events]
    disposition = client.get("/events/export").headers["content-disposition"]
    assert disposition.startswith('attachment; filename="leadflow-events-2')


# -- filters ----------------------------------------------------------------------------


def exported_ids(client: TestClient, flow_id: str, **params: Any) -> list[str]:
    answer = client.get(f"/flows/{flow_id}/events/export", params={"format": "jsonl", **params})
    return [e["id"] for e in jsonl_events(answer)]


def ids(events: list[Event]) -> list[str]:
    return [e["id"] for e in events]


def test_filters_by_lead_outcome_step_and_repeated_types(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    lead = flow_events[-1]["lead_id"]
    assert exported_ids(client, pg_schema, lead_id=lead) == ids(
        [e for e in flow_events if e["lead_id"] == lead]
    )
    assert exported_ids(client, pg_schema, outcome="failure") == ids(
        [e for e in flow_events if e["outcome"] == "failure"]
    )
    assert exported_ids(client, pg_schema, step_id="service-area") == ids(
        [e for e in flow_events if e["step_id"] == "service-area"]
    )
    types = ["source.accepted", "flow.completed"]
    assert exported_ids(client, pg_schema, type=types) == ids(
        [e for e in flow_events if e["type"] in types]
    )
    assert exported_ids(client, pg_schema, lead_id="no-such-lead") == []


def test_start_is_inclusive_end_exclusive_and_times_without_offset_are_utc(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    second_lead = [e for e in flow_events if e["timestamp"] >= BASE_MS + 1000]
    first_of_second = event_to_json_dict(second_lead[0])["timestamp"]  # "…T16:00:01.000Z"
    assert exported_ids(client, pg_schema, start=first_of_second) == ids(second_lead)
    assert exported_ids(client, pg_schema, end=first_of_second) == ids(
        [e for e in flow_events if e["timestamp"] < BASE_MS + 1000]
    )
    assert exported_ids(client, pg_schema, start="2025-11-24T16:00:01") == ids(second_lead)
    assert exported_ids(client, pg_schema, start="2025-11-24T17:00:01+01:00") == ids(second_lead)
    only_second = {"start": "2025-11-24T16:00:01", "end": "2025-11-24T16:00:02"}
    assert exported_ids(client, pg_schema, **only_second) == ids(
        [e for e in second_lead if e["timestamp"] < BASE_MS + 2000]
    )


# -- refused requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"format": "xlsx"}, "Input should be 'csv' or 'jsonl'"),
        ({"frmat": "csv"}, "Extra inputs are not permitted"),
        ({"start": "yesterday"}, "Input should be an ISO 8601 date or time"),
        (
            {"start": "2025-11-24T17:00:00", "end": "2025-11-24T16:00:00"},
            "end (2025-11-24T16:00:00+00:00) must be after start (2025-11-24T17:00:00+00:00)",
        ),
        ({"lead_id": ""}, "String should have at least 1 character"),
    ],
)
def test_bad_parameters_answer_422_saying_what_is_wrong(
    client: TestClient, pg_settings: Any, params: dict[str, str], message: str
) -> None:
    for url in ("/events/export", "/flows/demo/events/export"):
        answer = client.get(url, params=params)
        assert answer.status_code == 422, answer.text
        assert message in answer.text


def test_the_flow_path_takes_no_second_flow_id(client: TestClient, pg_settings: Any) -> None:
    answer = client.get("/flows/demo/events/export", params={"flow_id": "other"})
    assert answer.status_code == 422 and "flow_id" in answer.text


def test_the_application_routes_events_export_to_the_export_not_to_an_event_id(
    export_settings: Settings, flow_events: list[Event]
) -> None:
    answer = admin_client(create_app(export_settings)).get(
        "/events/export", params={"format": "jsonl"}
    )
    assert answer.status_code == 200, answer.text
    assert len(jsonl_events(answer)) == len(flow_events) + 5  # and the other flow's lead


def test_an_unreachable_database_answers_503_before_any_byte_of_the_file(
    export_settings: Settings,
) -> None:
    down = export_settings.model_copy(
        update={"database_url": SecretStr("postgresql://leadflow:s3cret@127.0.0.1:9/leadflow")}
    )
    answer = admin_client(api(down)).get("/events/export")
    assert answer.status_code == 503
    assert answer.json() == {"detail": "The event store is unavailable; retry later"}
