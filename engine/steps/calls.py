"""The HTTP exchange of a step that calls a service (a buyer, an enhancement).

A step never makes the call: it asks for one as data (a ``Call``), the runtime
makes it (``engine.runtime.http_calls``) and hands back the ``Answer`` for the
step to judge, so how calls are run (one at a time, or many at once) is the
runtime's choice alone.

Pure: building the request from a field mapping, reading values out of the
answer by dotted path, telling a technical failure from an answer, and the
request/response as events record them (LeadConduit's ``transactions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from engine.steps.base import Snapshot

MAX_BODY = 16384
# Answers that mean "could not process", not "said no": worth a retry.
ERROR_STATUSES = frozenset({401, 403, 404, 408, 429})


@dataclass(frozen=True, slots=True)
class Delivery:
    """The request to send."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """A call a step asks the runtime to make: the request, how long to wait for the
    answer, and the service's name for a failure (``Buyer timeout after 5000ms``)."""

    request: Delivery
    timeout_ms: int
    service: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: a response, or the technical error instead."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None = None
    wait_ms: int = 0
    sent_at_ms: int = 0
    received_at_ms: int = 0


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_call(
    snapshot: Snapshot,
    url: str,
    mapping: dict[str, str],
    fmt: Literal["json", "form"],
    event_id: str,
) -> Delivery:
    """Mapped snapshot fields as JSON or a form, keyed by the event id.

    The event id doubles as an idempotency key: a call repeated after a crash
    or as a retry carries the same key, so the service can recognise it.
    """
    fields = {
        target: snapshot[src] for target, src in mapping.items() if snapshot.get(src) is not None
    }
    headers = {"Idempotency-Key": event_id, "Accept": "application/json"}
    if fmt == "json":
        headers["Content-Type"] = "application/json"
        body = orjson.dumps(fields)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode({k: _form_value(v) for k, v in fields.items()}).encode()
    return Delivery(url, headers, body)


def dig(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; None where the path does not exist."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _text(body: bytes) -> str:
    return body[:MAX_BODY].decode("utf-8", errors="replace")


def transaction(request: Delivery, answer: Answer) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The request and the response (None if there was none) as events record them."""
    sent = {
        "method": "POST",
        "uri": request.url,
        "headers": dict(request.headers),
        "body": _text(request.body),
        "timestamp": answer.sent_at_ms,
    }
    if answer.status is None:
        return sent, None
    received = {
        "status": answer.status,
        "status_text": "",
        "headers": dict(answer.headers),
        "body": _text(answer.body),
        "timestamp": answer.received_at_ms,
    }
    return sent, received


def read_answer(answer: Answer, service: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as a JSON object, or why it is a technical error instead."""
    if answer.error is not None:
        return None, answer.error
    assert answer.status is not None
    if answer.status >= 500 or answer.status in ERROR_STATUSES:
        return None, f"{service} answered HTTP {answer.status}"
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None, f"Unreadable {service.lower()} response: not JSON"
    if not isinstance(data, dict):
        return None, f"Unreadable {service.lower()} response: not a JSON object"
    return data, None
