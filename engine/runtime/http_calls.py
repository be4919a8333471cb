"""One HTTP call to an external service (buyer, enhancement), timed and never raising.

Whatever happens - an answer, a timeout, a refused connection - comes back
as an ``Answer`` for the step's pure judgement; ``wait_ms`` is the time spent
waiting on the service, which the event reports apart from the engine's own.
"""

from __future__ import annotations

import time

import httpx

from engine.runtime.handlers.base import now_ms
from engine.steps.calls import Answer, Delivery

_KEPT_HEADERS = ("content-type", "x-request-id")


def post(http: httpx.Client, delivery: Delivery, timeout_ms: int, service: str) -> Answer:
    sent = now_ms()
    t0 = time.perf_counter()

    def waited() -> int:
        return int((time.perf_counter() - t0) * 1000)

    try:
        resp = http.post(
            delivery.url, content=delivery.body, headers=delivery.headers, timeout=timeout_ms / 1000
        )
    except httpx.TimeoutException:
        return Answer(
            None, {}, b"", f"{service} timeout after {timeout_ms}ms", waited(), sent, now_ms()
        )
    except httpx.HTTPError as exc:
        return Answer(
            None, {}, b"", f"{service} unreachable: {type(exc).__name__}", waited(), sent, now_ms()
        )
    headers = {k: v for k, v in resp.headers.items() if k.lower() in _KEPT_HEADERS}
    return Answer(resp.status_code, headers, resp.content, None, waited(), sent, now_ms())
