"""Caps: how many successful leads a flow, a source or a recipient takes per period.

Only successful leads count (a delivered lead for a recipient cap; an
accepted lead for flow and source caps). The counting itself is state kept
in Postgres with the lead id as idempotency key (``engine.state``), so a lead
is never counted twice, whatever is retried or replayed.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from engine.model import ConfigModel

Duration = Literal["minute", "hour", "day", "week", "month"]


class CapSpec(ConfigModel):
    name: str | None = None
    maximum: Annotated[int, Field(ge=1)]
    duration: Duration = "day"
    time_zone: str = "UTC"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
