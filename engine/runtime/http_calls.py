"""The external calls steps ask for (``engine.steps.calls.Call``), made over HTTP.

A handler of a calling step never makes the call itself: it hands the step's
``Call`` to a ``CallRunner`` and the step judges the ``Answer``. The runner is
the one place that decides how calls run: ``HttpCallRunner`` makes them one at
a time, in the order the leads come; a runner that makes many at once (keeping
each lead's calls in order) can take its place without a step changing.

Whatever happens - an answer, a timeout, a refused connection - comes back
as an ``Answer`` for the step's pure judgement; ``wait_ms`` is the time spent
waiting on the service, which the event reports apart from the engine's own.
"""

from __future__ import annotations

import time
from typing import Protocol

import httpx

from engine.steps.calls import Answer, Call, Delivery

_KEPT_HEADERS = ("content-type", "x-request-id")


class CallRunner(Protocol):
    """Makes the calls steps ask for; never raises for what the service did."""

    def run(self, call: Call) -> Answer: ...

    def close(self) -> None: ...


class HttpCallRunner:
    """Each call made when it is asked for, on one connection pool (synchronous)."""

    def __init__(self, http: httpx.Client | None = None) -> None:
        self.http = http if http is not None else httpx.Client()

    def run(self, call: Call) -> Answer:
        return post(self.http, call.request, call.timeout_ms, call.service)

    def close(self) -> None:
        self.http.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def post(http: httpx.Client, delivery: Delivery, timeout_ms: int, service: str) -> Answer:
    sent = _now_ms()
    t0 = time.perf_counter()

    def waited() -> int:
        return int((time.perf_counter() - t0) * 1000)

    try:
        resp = http.post(
            delivery.url, content=delivery.body, headers=delivery.headers, timeout=timeout_ms / 1000
        )
    except httpx.TimeoutException:
        return Answer(
            None, {}, b"", f"{service} timeout after {timeout_ms}ms", waited(), sent, _now_ms()
        )
    except httpx.HTTPError as exc:
        return Answer(
            None, {}, b"", f"{service} unreachable: {type(exc).__name__}", waited(), sent, _now_ms()
        )
    headers = {k: v for k, v in resp.headers.items() if k.lower() in _KEPT_HEADERS}
    return Answer(resp.status_code, headers, resp.content, None, waited(), sent, _now_ms())
