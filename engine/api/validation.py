"""Request checks every route gets, installed once by ``create_app``.

Postgres text and jsonb cannot hold NUL (U+0000), and UTF-8 cannot encode a lone
UTF-16 surrogate (U+D800..U+DFFF, which a JSON ``"\\ud800"`` escape decodes to),
so a value carrying either fails deep inside the driver (``psycopg.DataError``,
a 500) wherever it reaches SQL. ``reject_unstorable_text`` refuses such a value
up front on every route, as a 422 naming the parameter in FastAPI's own shape,
so no route has to remember it. The intake routes take their body raw: a lead's
body is the source step's data (an unreadable one is a 400 and a
``source.rejected`` lead), so only their path, query and headers are checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import APIRoute

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

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
