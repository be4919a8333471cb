"""The HTTP exchange of a step that calls a service (a buyer, an enhancement).

A step never makes the call: it asks for one as data (a ``Call``), the runtime
makes it (``engine.runtime.calls``) and hands back the ``Answer`` for the
step to judge, so how calls are run (one at a time, or many at once) is the
runtime's choice alone.

Pure: building the request from a field mapping, reading values out of the
answer by dotted path, telling a technical failure from an answer, and the
request/response as events record them (LeadConduit's ``transactions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

import orjson
from pydantic import Field, HttpUrl, model_validator

from engine.model import ConfigModel
from engine.steps.base import Snapshot

MAX_BODY = 16384
# What an event keeps of a text a service chose (a reason, its own id, a header): an
# event must stay far below the topic's max message size whatever the service says.
MAX_REASON = 1024
MAX_ID = 256
MAX_HEADER = 256
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
# An HTTP header name (RFC 9110 token), for the flow's ``idempotency_header``.
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
# Answers that mean "could not process", not "said no": worth a retry.
ERROR_STATUSES = frozenset({401, 403, 404, 408, 429})


@dataclass(frozen=True, slots=True)
class Delivery:
    """The request to send."""

    url: str
    headers: dict[str, str]
    body: bytes


class CallAuth(ConfigModel):
    """Credentials a service wants, by reference: the secret's value lives in an environment
    variable (``secret_env``) or a file (``secret_file``), never in the flow, the URL or an
    event. ``header``: sent as ``<header>: <secret>`` (an API key header); ``bearer``:
    ``Authorization: Bearer <secret>``; ``basic``: ``Authorization: Basic`` of ``username``
    and the secret as password. Read when the call is made (``engine.runtime.calls``)."""

    kind: Literal["header", "bearer", "basic"] = "header"
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "Authorization"
    username: str | None = None
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CallAuth:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("auth needs exactly one of secret_env or secret_file")
        if self.kind == "basic" and not self.username:
            raise ValueError("basic auth needs a username")
        return self


def no_credentials_in_url(url: HttpUrl) -> HttpUrl:
    """A URL with a user or password in it would put them in every event that records the
    request, and in logs: refused, with where they go instead."""
    if url.username or url.password:
        raise ValueError(
            "credentials in the URL are refused: use auth with secret_env or secret_file"
        )
    return url


@dataclass(frozen=True, slots=True)
class Call:
    """A call a step asks the runtime to make: the request, how long to wait for the
    answer, and the service's name for a failure (``Buyer timeout after 5000ms``)."""

    request: Delivery
    timeout_ms: int
    service: str
    # The most calls at once to this service (a buyer's own limit); None: no limit.
    max_concurrency: int | None = None
    # Credentials by reference, added by the runner when it sends the call (never recorded).
    auth: CallAuth | None = None

    @property
    def destination(self) -> str:
        """Whom the call goes to, for per-destination limits, breakers and metrics: the
        URL's scheme, host and port (never credentials a URL may carry)."""
        parts = urlsplit(self.request.url)
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}"


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
    # The destination's circuit breaker after this call (closed, open, half_open), where
    # the runtime keeps one: recorded on the step's error event.
    breaker_state: str | None = None
    # True: no answer because the round of calls it was made in ended (its window), not
    # because the service failed: for an auction, a bid that did not come in time.
    cut: bool = False
    # True: the call ran out of its own timeout_ms (recorded on the step's error event).
    timed_out: bool = False


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_call(
    snapshot: Snapshot,
    url: str,
    mapping: dict[str, str],
    fmt: Literal["json", "form"],
    key: str,
    key_header: str = DEFAULT_IDEMPOTENCY_HEADER,
) -> Delivery:
    """Mapped snapshot fields as JSON or a form, with the idempotency ``key`` in ``key_header``.

    The key comes from the delivery (lead, submission, step), never the attempt or the
    clock: a call repeated after a crash, on a replay or as a retry carries the same
    key, so the service can recognise it.
    """
    fields = {
        target: snapshot[src] for target, src in mapping.items() if snapshot.get(src) is not None
    }
    headers = {key_header: key, "Accept": "application/json"}
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


def bounded(value: Any, limit: int = MAX_REASON) -> str:
    """A service's value as text of at most ``limit`` characters (a reason, an id)."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def waited_on(answers: list[Answer]) -> int:
    """The time a step spent waiting on the answers of calls made at once: the longest."""
    return max((a.wait_ms for a in answers), default=0)


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
        "headers": {k[:MAX_HEADER]: bounded(v, MAX_HEADER) for k, v in answer.headers.items()},
        "body": _text(answer.body),
        "timestamp": answer.received_at_ms,
    }
    return sent, received


def read_answer(answer: Answer, service: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as a JSON object, or why it is a technical error instead."""
    if answer.error is not None:
        return None, bounded(answer.error)
    assert answer.status is not None
    if 300 <= answer.status < 400:
        return None, f"{service} answered HTTP {answer.status}: a redirect, not followed"
    if answer.status >= 500 or answer.status in ERROR_STATUSES:
        return None, f"{service} answered HTTP {answer.status}"
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None, f"Unreadable {service.lower()} response: not JSON"
    if not isinstance(data, dict):
        return None, f"Unreadable {service.lower()} response: not a JSON object"
    return data, None
