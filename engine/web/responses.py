"""What the routes answer besides their success, for the OpenAPI document: the bodies'
models and ``answers(...)``, which each router or route names its statuses with.

Every route can answer 422 (``engine.web.validation`` checks every path, query, header
and body), so ``create_app`` declares that one for all of them; the rest are declared
where they arise, on the router when all its routes share them (503 wherever Postgres is
read), on the decorator otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Responses = dict[int | str, dict[str, Any]]


class Problem(BaseModel):
    """FastAPI's ``HTTPException`` body: what went wrong, in a sentence."""

    detail: str


class AccessRefusal(BaseModel):
    """A request the guard (``engine.access.guard``) refused: a code and why."""

    error: str
    reason: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationProblem(BaseModel):
    """Every 422 (``engine.web.validation``): FastAPI's shape, each echoed input bounded."""

    detail: list[ValidationIssue]


class IntakeRefusal(BaseModel):
    """A request refused before any lead exists (``engine.api.intake.refusal``)."""

    outcome: Literal["error", "failure"]
    reason: str
    error: str


class LeadRef(BaseModel):
    id: str


class LeadAnswer(BaseModel):
    """LeadConduit's answer to a submitted lead (``engine.intake.answers.lead_answer``)."""

    outcome: str
    reason: str | None
    lead: LeadRef
    price: float


class PendingAnswer(BaseModel):
    """The lead's decisive event did not come in time (``pending_answer``)."""

    outcome: Literal["pending"]
    reason: str
    lead: LeadRef
    status_url: str


class PingRef(BaseModel):
    id: str


class PingAnswer(BaseModel):
    outcome: Literal["success", "failure"]
    reason: str | None
    price: float
    ping: PingRef


class PingLimited(BaseModel):
    outcome: Literal["failure"]
    reason: str
    retry_after: int
    ping_limit_reached: Literal[True]


_PROBLEMS: dict[int, str] = {
    400: "A body FastAPI could not read (not UTF-8, say); JSON it could read but refuses is a 422",
    401: "No key, or not a valid one",
    404: "Nothing has that id (the answer says which)",
    409: "Not in a state to do that yet (the answer says why)",
    410: "It existed but is gone",
    502: "Object storage failed",
    503: "The event store (Postgres) or Kafka is unavailable; retry later",
}


def answers(*statuses: int) -> Responses:
    """``responses=`` for FastAPI: these statuses with a ``Problem`` body (``{"detail"}``)."""
    return {status: {"model": Problem, "description": _PROBLEMS[status]} for status in statuses}


_REFUSALS: dict[int, str] = {
    401: "No API key, or an unknown or revoked one",
    403: "The key lacks the route's scope, or may not act on that object",
    404: "Nothing of that id for this key",
    413: "Body over the limit",
    429: "Too many requests for this key, or failed authentications from this address"
    " (see Retry-After)",
}


def guarded(*extra: int) -> Responses:
    """``responses=`` for a route behind the key guard: 401, 403 and 429 (and ``extra``)
    with an ``AccessRefusal`` body."""
    return {
        status: {"model": AccessRefusal, "description": _REFUSALS[status]}
        for status in (401, 403, 429, *extra)
    }


VALIDATION: Responses = {
    422: {
        "model": ValidationProblem,
        "description": "A parameter or body value refused; each error names it (loc)",
    }
}


def as_text(description: str, *media_types: str) -> Responses:
    """``responses=`` for a 200 answered as a file or text (CSV, JSON lines, gzip) in one of
    ``media_types``; a route answering JSON as well keeps its JSON schema beside them."""
    content = {media_type: {"schema": {"type": "string"}} for media_type in media_types}
    return {200: {"description": description, "content": content}}


_INTAKE_REFUSALS = {
    401: "No key, or not this source's",
    404: "No such flow or source, or the source takes no HTTP leads (or no pings)",
    413: "Body over the source's max_body_bytes",
    415: "A content type the source does not take",
    429: "Too many failed authentications from this address (see Retry-After)",
    503: "Source credentials not configured, or Kafka/Postgres unavailable",
}


def intake_answers(*extra: int) -> Responses:
    """The statuses both intake routes answer with ``IntakeRefusal`` (plus ``extra``), and
    their 422: an idempotency key reused with another body, or a refused path or query."""
    found: Responses = {
        status: {"model": IntakeRefusal, "description": why}
        for status, why in _INTAKE_REFUSALS.items()
    }
    for status in extra:
        found[status] = {"model": IntakeRefusal, "description": _PROBLEMS.get(status, "")}
    found[422] = {
        "model": IntakeRefusal | ValidationProblem,
        "description": "Idempotency key reused with another body, or a refused parameter",
    }
    return found
