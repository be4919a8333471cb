"""One HTTP exchange with a service, inside a deadline that holds, as an ``Answer``.

The client is aiohttp: at hundreds of calls in flight, httpx spent 1.7 ms of CPU per
call (its connection pool matches requests to connections in quadratic time, and its
layers cost the rest) where aiohttp spends 0.5 ms - the difference between a buyer
step bound by its buyers and one bound by its own CPU.

The deadline is wall-clock over the whole exchange (pool, connect, send, wait,
read), not a per-operation timeout: a buyer that trickles a byte a second
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

import aiohttp

from engine.runtime.calls.credentials import CredentialError, credential_headers, masked
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

    def failed(self, reason: str, *, timed_out: bool = False) -> Answer:
        return Answer(
            None, {}, b"", reason, self.waited_ms(), self.sent_ms, now_ms(), timed_out=timed_out
        )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (aiohttp wraps the OSError)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        os_error = getattr(seen, "os_error", None)  # aiohttp's connector errors
        if isinstance(os_error, BaseException) and os_error not in chain:
            chain.append(os_error)
        seen = seen.__cause__ or seen.__context__
    return chain


def failure_reason(service: str, exc: BaseException) -> str:
    """A short, bounded reason for a failed exchange, from the kind of failure only."""
    chain = _causes(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"{service} unreachable: DNS lookup failed"
    if any(isinstance(e, ssl.SSLError | aiohttp.ClientSSLError) for e in chain):
        return f"{service} unreachable: TLS handshake failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"{service} unreachable: connection refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{service} closed the connection without an answer"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return f"{service} answered garbage: not HTTP"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{service} unreachable: cannot connect"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"{service} unreachable: {type(exc).__name__}"
    return f"{service} call failed: {type(exc).__name__}"


# No timeout of aiohttp's own: the deadline around the exchange is the one that holds.
NO_TIMEOUT = aiohttp.ClientTimeout(total=None)


def new_session(max_connections: int) -> aiohttp.ClientSession:
    """A session for calls: ``max_connections`` at most, to any number of destinations,
    no cookies kept between buyers, no redirects followed (set per request)."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=NO_TIMEOUT,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


async def exchange(session: aiohttp.ClientSession, call: Call, limits: CallLimits) -> Answer:
    """Post ``call``'s request and read the answer, all within ``call.timeout_ms``."""
    clock = _Clock()
    request = call.request
    cap = limits.max_response_bytes
    headers_out: dict[str, str] = request.headers
    secrets: list[str] = []
    if call.auth is not None:
        try:
            extra, secrets = credential_headers(call.auth)
        except CredentialError as exc:
            return clock.failed(f"{call.service} credentials unavailable: {exc}")
        # The credential wins over a header of the same name in any case the flow wrote it.
        names = {name.lower() for name in extra}
        kept = {k: v for k, v in request.headers.items() if k.lower() not in names}
        headers_out = {**kept, **extra}
    try:
        async with (
            asyncio.timeout(call.timeout_ms / 1000),
            session.post(
                request.url,
                data=request.body,
                headers=headers_out,
                allow_redirects=False,
            ) as resp,
        ):
            body = bytearray()
            while chunk := await resp.content.read(cap + 1 - len(body)):
                body += chunk
                if len(body) > cap:
                    return clock.failed(f"{call.service} answer too large: over {cap} bytes")
            status = resp.status
            headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() in KEPT_HEADERS}
    except TimeoutError:
        return clock.failed(f"{call.service} timeout after {call.timeout_ms}ms", timed_out=True)
    except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
        return clock.failed(failure_reason(call.service, exc))
    if secrets:  # a service that echoes its credential back: never recorded
        body = bytearray(masked(bytes(body), secrets))
        headers = {k: masked(v.encode(), secrets).decode() for k, v in headers.items()}
    return Answer(status, headers, bytes(body), None, clock.waited_ms(), clock.sent_ms, now_ms())
