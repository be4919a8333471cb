"""One HTTP exchange with a service, inside a deadline that holds, as an ``Answer``.

The deadline is wall-clock over the whole exchange (pool, connect, send, wait,
read), not httpx's per-operation timeout: a buyer that trickles a byte a second
passes every per-read timeout and would hold the lead (and the step's Kafka
transaction) for ever. The body is read up to ``CallLimits.max_response_bytes``,
so a 2 GB answer costs at most that much memory. Redirects are not followed (a
post that lands somewhere else is not a delivery). Every failure - DNS, TLS, a
refused connection, garbage instead of HTTP - becomes an error ``Answer`` with a
short reason naming what went wrong, never the exception's own text (which may
carry a URL with credentials in it, and has no bound).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass

import httpx

from engine.steps.calls import Answer, Call

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
# Response headers an event keeps (the rest may be large, or secret: Set-Cookie).
KEPT_HEADERS = ("content-type", "x-request-id")


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one exchange may cost: the bytes of an answer read before it is cut."""

    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Clock:
    """When an exchange was sent: the ``sent_at`` of its answer and the service wait since."""

    def __init__(self) -> None:
        self.sent_ms = now_ms()
        self._t0 = time.perf_counter()

    def waited_ms(self) -> int:
        return int((time.perf_counter() - self._t0) * 1000)

    def failed(self, reason: str) -> Answer:
        return Answer(None, {}, b"", reason, self.waited_ms(), self.sent_ms, now_ms())


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (httpx wraps httpcore wraps the OSError)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def failure_reason(service: str, exc: BaseException) -> str:
    """A short, bounded reason for a failed exchange, from the kind of failure only."""
    chain = _causes(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"{service} unreachable: DNS lookup failed"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return f"{service} unreachable: TLS handshake failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"{service} unreachable: connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending" in str(exc):  # h11: the peer closed before any answer
            return f"{service} closed the connection without an answer"
        return f"{service} answered garbage: not HTTP"
    if isinstance(exc, httpx.ConnectError):
        return f"{service} unreachable: cannot connect"
    if isinstance(exc, httpx.HTTPError):
        return f"{service} unreachable: {type(exc).__name__}"
    return f"{service} call failed: {type(exc).__name__}"


async def exchange(client: httpx.AsyncClient, call: Call, limits: CallLimits) -> Answer:
    """Post ``call``'s request and read the answer, all within ``call.timeout_ms``."""
    clock = _Clock()
    request = call.request
    deadline_s = call.timeout_ms / 1000
    try:
        async with asyncio.timeout(deadline_s):
            async with client.stream(
                "POST",
                request.url,
                content=request.body,
                headers=request.headers,
                # Per operation, as a backstop: the deadline above is what holds.
                timeout=deadline_s,
                follow_redirects=False,
            ) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > limits.max_response_bytes:
                        return clock.failed(
                            f"{call.service} answer too large:"
                            f" over {limits.max_response_bytes} bytes"
                        )
    except (TimeoutError, httpx.TimeoutException):
        return clock.failed(f"{call.service} timeout after {call.timeout_ms}ms")
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return clock.failed(failure_reason(call.service, exc))
    headers = {k: v for k, v in resp.headers.items() if k.lower() in KEPT_HEADERS}
    return Answer(
        resp.status_code, headers, bytes(body), None, clock.waited_ms(), clock.sent_ms, now_ms()
    )
