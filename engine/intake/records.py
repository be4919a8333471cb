"""The intake record of a lead POSTed over HTTP: its headers, written by the API, read by
the source step.

The record's value is the body exactly as received and its key the lead id, as
for any producer; headers carry what the source step needs to record the HTTP
exchange (the request line and masked headers) and a ping's price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

CONTENT_TYPE_HEADER = "content-type"
SOURCE_HEADER = "source-id"
REQUEST_HEADER = "leadflow-http-request"  # JSON {method, uri, headers}, credentials masked
PING_ID_HEADER = "leadflow-ping-id"
PING_PRICE_HEADER = "leadflow-ping-price"


@dataclass(frozen=True, slots=True)
class HttpIntake:
    """What the source step learns from an intake record that came over HTTP."""

    request: dict[str, Any]
    ping_id: str | None
    price: float | None
    client_ip: str | None = None


def intake_headers(
    content_type: str,
    source_id: str,
    request: dict[str, Any],
    ping_id: str | None = None,
    price: float | None = None,
) -> list[tuple[str, str | bytes | None]]:
    headers: list[tuple[str, str | bytes | None]] = [
        (CONTENT_TYPE_HEADER, content_type.encode()),
        (SOURCE_HEADER, source_id.encode()),
        (REQUEST_HEADER, orjson.dumps(request)),
    ]
    if ping_id is not None and price is not None:
        headers += [(PING_ID_HEADER, ping_id.encode()), (PING_PRICE_HEADER, repr(price).encode())]
    return headers


def read_http_intake(headers: dict[str, bytes]) -> HttpIntake | None:
    """None for a record some other producer published (no HTTP exchange to record)."""
    raw = headers.get(REQUEST_HEADER)
    if raw is None:
        return None
    try:
        request = orjson.loads(raw)
        price = float(headers[PING_PRICE_HEADER]) if PING_PRICE_HEADER in headers else None
    except (orjson.JSONDecodeError, ValueError):
        return None  # unreadable: recorded as a plain intake record rather than lost
    if not isinstance(request, dict):
        return None
    ping = headers.get(PING_ID_HEADER)
    kept = {k: request[k] for k in ("method", "uri", "headers") if k in request}
    client = request.get("client_ip")
    return HttpIntake(
        kept,
        ping.decode(errors="replace") if ping else None,
        price,
        client if isinstance(client, str) else None,
    )
