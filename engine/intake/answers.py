"""What a source is answered, and what of its request is recorded: pure functions.

The source step records the answer on ``source.submitted`` and the HTTP
endpoint sends it; both build it here, from the same event fields, so the
recorded response is the one the source got.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Request headers whose values are credentials whatever the source configured.
_SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password", re.I)
MASK = "[masked]"
MAX_HEADERS = 50
MAX_HEADER_VALUE = 512
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    409: "Conflict",
    429: "Too Many Requests",
}


@dataclass(frozen=True, slots=True)
class IntakeAnswer:
    status: int
    body: dict[str, Any]


def lead_answer(
    lead_id: str, outcome: str, reason: str | None, price: float | None, malformed: bool = False
) -> IntakeAnswer:
    """LeadConduit's submit answer: ``201 {outcome, reason, lead: {id}, price}``. A body
    that could not be read is a 400 with the same shape: the lead exists (as a
    ``source.rejected``) and the source learns why."""
    body = {"outcome": outcome, "reason": reason, "lead": {"id": lead_id}, "price": price or 0.0}
    return IntakeAnswer(400 if malformed else 201, body)


def pending_answer(lead_id: str, status_url: str) -> IntakeAnswer:
    """The decisive event did not come in time: the lead is still processed, once."""
    return IntakeAnswer(
        202,
        {
            "outcome": "pending",
            "reason": "Still processing: follow the status URL",
            "lead": {"id": lead_id},
            "status_url": status_url,
        },
    )


def recorded_headers(headers: list[tuple[str, str]], secret_header: str) -> dict[str, str]:
    """Request headers fit for an event: credentials masked, bounded in number and size."""
    out: dict[str, str] = {}
    for name, value in headers[:MAX_HEADERS]:
        lower = name.lower()
        secret = lower == secret_header.lower() or _SECRET_HEADER.search(lower)
        out[lower] = MASK if secret else value[:MAX_HEADER_VALUE]
    return out


def recorded_response(answer: IntakeAnswer, timestamp_ms: int, body: bytes) -> dict[str, Any]:
    """The ``response`` record of ``source.submitted`` (schemas/lead_event.avsc HttpResponse)."""
    return {
        "status": answer.status,
        "status_text": STATUS_TEXT.get(answer.status, ""),
        "headers": {"content-type": "application/json"},
        "body": body.decode(),
        "timestamp": timestamp_ms,
    }
