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
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from engine.settings import Settings
from projectors.search import UnknownCursorError
from projectors.selection import END_DOC, START_DOC, Instant, range_problem

_SEQUENCES = (list, tuple, set, frozenset)


def query_error(
    name: str, message: str, value: Any, kind: str = "value_error", where: str = "query"
) -> Exception:
    """A 422 in FastAPI's own shape (``{"detail": [{"loc": ["query", name], ...}]}``), so a
    client handles the errors raised here and pydantic's alike."""
    return RequestValidationError(
        [{"type": kind, "loc": (where, name), "msg": message, "input": value}]
    )


def cursor_error(exc: UnknownCursorError, where: str = "query") -> Exception:
    """The 422 for an ``after_id``/``before_id`` naming no stored event, on every route."""
    message = f"Unknown event id {exc.event_id!r}: a cursor must be a stored event's id"
    return query_error(exc.param, message, exc.event_id, where=where)


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


def iso_utc(value: datetime) -> str:
    """How every time leaves the API: ISO 8601 in UTC with a ``Z``, as event timestamps do."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_utc_or_none(value: datetime | None) -> str | None:
    """``iso_utc``, with None (a time not reached yet: a job not started) passed through."""
    return None if value is None else iso_utc(value)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``start`` inclusive, ``end`` exclusive, both aware and UTC; None is unbounded."""

    start: datetime | None = None
    end: datetime | None = None


def time_range(
    request: Request,
    start: Annotated[Instant | None, Query(description=START_DOC)] = None,
    end: Annotated[Instant | None, Query(description=END_DOC)] = None,
) -> TimeRange:
    """The ``start``/``end`` pair every read route takes, checked to be in order (the same
    types and check as the export routes', ``projectors.selection``) and to span at most
    ``max_query_days``: a longer range is a 422 naming ``end``, not a scan of years."""
    problem = range_problem(start, end)
    if problem is None and start is not None and end is not None:
        problem = span_problem(request, end - start)
    if problem is not None:
        raise query_error("end", problem, end.isoformat() if end else None)
    return TimeRange(start, end)


def span_problem(request: Request, span: timedelta) -> str | None:
    """Why a range this long is refused (over the deployment's ``max_query_days``), or None."""
    settings: Settings = request.app.state.settings
    if span > timedelta(days=settings.max_query_days):
        return (
            f"The range spans over {settings.max_query_days} days (max_query_days):"
            " ask for a shorter one"
        )
    return None


Range = Annotated[TimeRange, Depends(time_range)]
