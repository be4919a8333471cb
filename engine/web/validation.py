"""Request checks every route gets, installed once by ``create_app``.

Postgres text and jsonb cannot hold NUL (U+0000), and UTF-8 cannot encode a lone
UTF-16 surrogate (U+D800..U+DFFF, which a JSON ``"\\ud800"`` escape decodes to),
so a value carrying either fails deep inside the driver (``psycopg.DataError``,
a 500) wherever it reaches SQL. ``reject_unstorable_text`` refuses such a value
up front on every route, as a 422 naming the parameter in FastAPI's own shape,
so no route has to remember it. The intake routes take their body raw: a lead's
body is the source step's data (an unreadable one is a 400 and a
``source.rejected`` lead), so only their path, query and headers are checked here.

``bounded_validation_errors`` answers every 422 without echoing a large input
back: FastAPI's own handler returns each error's ``input`` whole, so a 10 MB
value would come back as a 10 MB answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# How much of a refused value a 422 shows (characters), and of its message.
MAX_ECHO = 200
_MAX_MESSAGE = 1000
# A body of a million bad items is a million errors: the first ones say enough.
MAX_ERRORS = 20

Loc = tuple[str | int, ...]


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored as Postgres text, or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "holds a NUL character (U+0000), which stored text cannot hold"
    return f"holds a lone surrogate (U+{ord(char):04X}), which is not a character"


def _json_strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every string of a parsed JSON document, keys included, with where it is.

    Iterative: a deeply nested body must not exhaust the interpreter's stack.
    """
    stack: list[tuple[Loc, Any]] = [(loc, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, inner in item.items():
                yield (*where, key), key
                stack.append(((*where, key), inner))
        elif isinstance(item, list):
            stack.extend(((*where, i), inner) for i, inner in enumerate(item))


async def _body_strings(request: Request, route: APIRoute) -> Iterator[tuple[Loc, str]]:
    """The strings of a route's declared body. FastAPI parsed and cached it before any
    dependency runs (and already answered a body it could not parse), so this reads no
    byte twice."""
    if route.body_field is None:
        return iter(())
    if isinstance(route.body_field.field_info, Form):
        form = await request.form()
        return (
            (("body", name), value) for name, value in form.multi_items() if isinstance(value, str)
        )
    if not await request.body():
        return iter(())
    try:
        document = await request.json()
    except ValueError:  # not JSON: FastAPI refuses it with its own 422
        return iter(())
    return _json_strings(document, ("body",))


async def reject_unstorable_text(request: Request) -> None:
    """An app-wide dependency: a 422 naming every path, query, header or body value (or
    query or body key) holding a character no stored text can hold."""
    candidates: list[tuple[Loc, str]] = [
        *((("path", name), value) for name, value in request.path_params.items()),
        *((("query", name), name) for name in request.query_params),
        *((("query", name), value) for name, value in request.query_params.multi_items()),
        *((("header", name), value) for name, value in request.headers.items()),
    ]
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        candidates.extend(await _body_strings(request, route))
    errors = [
        {"type": "string_unstorable", "loc": loc, "msg": f"Value {why}", "input": text}
        for loc, text in candidates
        if (why := unstorable(text)) is not None
    ]
    if errors:
        raise RequestValidationError(errors)


def _encodable(value: Any) -> Any:
    """``value`` (JSON-ready) with each lone surrogate as U+FFFD: echoed as it came, one
    would make the answer itself unencodable (a 500 in place of the 422)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def _truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (truncated: {len(text):,} characters)"


def bounded(value: Any, limit: int = MAX_ECHO) -> Any:
    """``value`` (JSON-ready, encodable) if short; else its first ``limit`` characters, saying
    so. A list or object is measured as JSON and, if too long, becomes that truncated text."""
    if isinstance(value, str):
        return _truncated(value, limit)
    if isinstance(value, dict | list):
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        return value if len(text) <= limit else _truncated(text, limit)
    return value


def _bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    answer = dict(error)
    answer["loc"] = [bounded(part) for part in error.get("loc", ())]
    answer["msg"] = _truncated(str(error.get("msg", "")), _MAX_MESSAGE)
    if "input" in error:
        answer["input"] = bounded(error["input"])
    if isinstance(error.get("ctx"), dict):
        answer["ctx"] = {k: bounded(v) for k, v in error["ctx"].items()}
    return answer


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The errors as a 422 shows them: at most ``MAX_ERRORS``, every echo bounded."""
    shown = [_bounded_error(e) for e in _encodable(jsonable_encoder(errors[:MAX_ERRORS]))]
    if len(errors) > MAX_ERRORS:
        shown.append(
            {
                "type": "too_many_errors",
                "loc": [],
                "msg": f"{len(errors) - MAX_ERRORS:,} more errors not shown",
            }
        )
    return shown


async def bounded_validation_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The app's RequestValidationError handler: FastAPI's 422 shape, bounded."""
    return JSONResponse({"detail": bounded_errors(list(exc.errors()))}, status_code=422)
