"""Query-parameter habits shared by every read route: strict names, UTC times, one error shape.

FastAPI ignores query parameters a route does not declare, so a typo
(``?lead=...`` for ``?lead_id=...``) silently widens a query to every event.
``reject_unknown_query_params`` turns that into a 422, and so is a scalar
parameter given twice (which value would win is not the client's guess to make).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_SEQUENCES = (list, tuple, set, frozenset)


def query_error(name: str, message: str, value: Any, kind: str = "value_error") -> Exception:
    """A 422 in FastAPI's own shape (``{"detail": [{"loc": ["query", name], ...}]}``), so a
    client handles the errors raised here and pydantic's alike."""
    return RequestValidationError(
        [{"type": kind, "loc": ("query", name), "msg": message, "input": value}]
    )


def _is_sequence(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in _SEQUENCES:
        return True
    # ``list[str] | None``: a union is a sequence if any member is.
    return any(_is_sequence(arg) for arg in typing.get_args(annotation))


def _query_params(dependant: Dependant) -> Iterator[tuple[str, bool]]:
    """(name in the URL, takes several values) of every query parameter, dependencies included."""
    for field in dependant.query_params:
        yield field.alias, _is_sequence(field.field_info.annotation)
    for sub in dependant.dependencies:
        yield from _query_params(sub)


def reject_unknown_query_params(request: Request) -> None:
    """A route dependency: 422 for a query parameter the route does not take, or a
    single-valued one given more than once."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = dict(_query_params(route.dependant))
    for name in request.query_params:
        if name not in declared:
            expected = ", ".join(sorted(declared)) or "no query parameters"
            raise query_error(
                name,
                f"Unknown query parameter {name!r}; this route takes: {expected}",
                request.query_params[name],
                "extra_forbidden",
            )
        values = request.query_params.getlist(name)
        if len(values) > 1 and not declared[name]:
            raise query_error(name, f"{name!r} takes one value, got {len(values)}", values)


StrictQuery = Depends(reject_unknown_query_params)


def as_utc(value: datetime | None) -> datetime | None:
    """A time without an offset (or a bare date, "2024-01-15") is UTC, never the server's zone."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def iso_utc(value: datetime) -> str:
    """How every time leaves the API: ISO 8601 in UTC with a ``Z``, as event timestamps do."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``start`` inclusive, ``end`` exclusive, both aware and UTC; None is unbounded."""

    start: datetime | None = None
    end: datetime | None = None


def time_range(
    start: Annotated[
        datetime | None, Query(description="inclusive, ISO 8601; UTC if no offset")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="exclusive, ISO 8601; UTC if no offset")
    ] = None,
) -> TimeRange:
    """The ``start``/``end`` pair every read route takes, checked to be in order."""
    start, end = as_utc(start), as_utc(end)
    if start is not None and end is not None and start >= end:
        raise query_error("end", "end must be after start", end.isoformat())
    return TimeRange(start, end)


Range = Annotated[TimeRange, Depends(time_range)]
