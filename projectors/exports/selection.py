"""Which events an export holds and in what format: one model for query strings, job
bodies and the CLI, so all three accept and refuse exactly the same things."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ExportFormat = Literal["csv", "jsonl"]

Id = Annotated[str, Field(min_length=1, max_length=64)]


def _as_utc(value: datetime | None) -> datetime | None:
    # A time without an offset (or a bare date) is UTC, not the server's local time.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


Instant = Annotated[datetime | None, AfterValidator(_as_utc)]


class EventSelection(BaseModel):
    """Filters on the events; each one left out selects everything. Unknown fields are
    refused (a misspelt filter must not silently export every event)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: Id | None = None
    type: Annotated[tuple[Id, ...], Field(max_length=50)] = ()
    outcome: Id | None = None
    step_id: Id | None = None
    start: Annotated[Instant, Field(description="inclusive, ISO 8601; no offset = UTC")] = None
    end: Annotated[Instant, Field(description="exclusive, ISO 8601; no offset = UTC")] = None

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(
                f"start ({self.start.isoformat()}) must be before end ({self.end.isoformat()})"
            )
        return self


class ExportQuery(EventSelection):
    """A whole export: the filters, the flow (optional) and the file format."""

    flow_id: Id | None = None
    format: ExportFormat = "csv"

    def filters(self) -> dict[str, object]:
        """The filters as JSON-ready values, without the format (a job stores them apart)."""
        return self.model_dump(mode="json", exclude={"format"}, exclude_defaults=True)


class FlowExportQuery(EventSelection):
    """``ExportQuery`` under ``/flows/{flow_id}``: the flow comes from the path."""

    format: ExportFormat = "csv"

    def for_flow(self, flow_id: str) -> ExportQuery:
        return ExportQuery(flow_id=flow_id, **self.model_dump())
