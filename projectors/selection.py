"""Which events a read selects: the filter types of ``GET /events`` (``projectors.api``),
the export routes, export job bodies and ``leadflow export``, defined once so that all of
them accept and refuse exactly the same values, with the same messages."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ExportFormat = Literal["csv", "jsonl"]

EventId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")]
Outcome = Literal["success", "failure", "error"]
SortOrder = Literal["asc", "desc"]

START_DOC = (
    "inclusive; ISO 8601, a date or a time (UTC when it carries no offset); "
    "a number is refused, not taken as epoch seconds"
)
END_DOC = (
    "exclusive; ISO 8601 like start; must be after start: start == end would select "
    "nothing and is refused (422), like start > end"
)

# A date first, as every ISO 8601 form this API takes starts. Without the check pydantic
# reads a number, or a string of digits ("1700000000"), as seconds since the epoch.
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_only(value: Any) -> Any:
    """A ``BeforeValidator``: a time or day given as ISO 8601 text (or as a ``datetime`` or
    ``date`` by Python callers) goes on to pydantic's parsing; anything else is refused here."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_START.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_type",
        "Input should be an ISO 8601 date or time, like 2025-01-15 or 2025-01-15T10:00:00Z;"
        " a number is not taken as a time",
    )


def as_utc(value: datetime) -> datetime:
    """A time without an offset (or a bare date, "2024-01-15") is UTC, never the server's zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Instant = Annotated[datetime, BeforeValidator(iso_only), AfterValidator(as_utc)]


def range_problem(start: date | None, end: date | None) -> str | None:
    """Why ``start``..``end`` is no range to select from, or None when it is one."""
    if start is None or end is None or start < end:
        return None
    return (
        f"end ({end.isoformat()}) must be after start ({start.isoformat()}): start is inclusive"
        " and end exclusive, so start == end would select nothing"
    )


# One name per event field: the event schema's (LeadConduit's own, seed 000). The seeds also
# use these other names for the same fields; filters accept them, and README's "Field names"
# table lists them. (Exports' CSV header keeps ``event_id``: its columns never change.)
FIELD_ALIASES: dict[str, str] = {
    "event_id": "id",
    "duration_ms": "ms",
    "lead_snapshot": "vars",
    "rejection_reason": "reason",
}
# The filters named after those fields, under either name.
FILTER_ALIASES: dict[str, str] = {
    "event_id": "id",
    "rejection_reason": "reason",
    "min_duration_ms": "min_ms",
}


def canonical_filters(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each filter under its one name; a filter given under both names is
    refused (which one would win is not for the reader to guess)."""
    out = dict(data)
    for alias, name in FILTER_ALIASES.items():
        if alias not in out:
            continue
        if name in out:
            raise PydanticCustomError(
                "value_error", f"{alias} and {name} are one filter: give only one of them"
            )
        value = out.pop(alias)
        # A query string's one ``event_id=`` reaches the model as text, not a list (only
        # ``id`` is declared repeatable): one id.
        out[name] = [value] if name == "id" and isinstance(value, str) else value
    return out


class EventSelection(BaseModel):
    """Filters on the events, as ``GET /events`` takes them (each one left out selects
    everything), and the order and bounds of an export. Unknown fields are refused (a
    misspelt filter must not silently export every event)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: EventId | None = None
    type: Annotated[
        tuple[EventType, ...], Field(max_length=50, description="repeatable, e.g. source.accepted")
    ] = ()
    outcome: Outcome | None = None
    step_id: EventId | None = None
    id: Annotated[
        tuple[EventId, ...], Field(max_length=100, description="event ids (or event_id)")
    ] = ()
    reason: Annotated[
        str | None,
        Field(max_length=1000, description="the exact reason (or rejection_reason)"),
    ] = None
    min_ms: Annotated[
        int | None,
        Field(ge=0, description="events that took at least this long (or min_duration_ms)"),
    ] = None
    start: Annotated[Instant | None, Field(description=START_DOC)] = None
    end: Annotated[Instant | None, Field(description=END_DOC)] = None
    after_id: Annotated[
        EventId | None,
        Field(description="a stored event's id: only events whose id sorts after it"),
    ] = None
    before_id: Annotated[
        EventId | None,
        Field(description="a stored event's id: only events whose id sorts before it"),
    ] = None
    sort: Annotated[
        SortOrder, Field(description="by event id (time, lead, step): asc (default) or desc")
    ] = "asc"
    limit: Annotated[
        int | None,
        Field(ge=1, le=1_000_000_000, description="at most this many events (default: all)"),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_filter(cls, data: Any) -> Any:
        return canonical_filters(data) if isinstance(data, dict) else data

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        problem = range_problem(info.data.get("start"), end)
        if problem is not None:
            raise PydanticCustomError("value_error", problem)
        return end


class ExportQuery(EventSelection):
    """A whole export: the filters, the flow (optional) and the file format."""

    flow_id: EventId | None = None
    format: ExportFormat = "csv"

    def filters(self) -> dict[str, object]:
        """The filters as JSON-ready values, without the format (a job stores them apart)."""
        return self.model_dump(mode="json", exclude={"format"}, exclude_defaults=True)


class FlowExportQuery(EventSelection):
    """``ExportQuery`` under ``/flows/{flow_id}``: the flow comes from the path."""

    format: ExportFormat = "csv"

    def for_flow(self, flow_id: str) -> ExportQuery:
        return ExportQuery(flow_id=flow_id, **self.model_dump())
