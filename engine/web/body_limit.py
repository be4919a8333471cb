"""A size limit on every request body (413), before a route reads it.

An ASGI middleware, so no route can forget it: a declared ``Content-Length`` over
the limit is refused at once, and a chunked body is counted as it arrives and cut
off at the limit. The intake routes keep their own, per-source limit
(``max_body_bytes`` in the flow) and their own answer shape, so they are left to it.
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# POST /flows/{flow}/sources/{source}[/ping]: the source's own limit applies.
_INTAKE = re.compile(r"^/flows/[^/]+/sources/[^/]+(/ping)?/?$")


class BodyTooLargeError(Exception):
    """The body went past the limit while it was being read."""


class BodyLimit:
    """Refuses a body over ``max_bytes`` with ``413 {"error", "reason"}``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _INTAKE.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            {"error": "body_too_large", "reason": f"Body over {self.max_bytes} bytes"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
