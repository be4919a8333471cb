"""``POST /flows/{flow_id}/sources/{source_id}``: a source submits a lead and gets the verdict.

Checks in the order a source can act on them, each a 4xx with a JSON body
``{outcome: "error", reason, error}``: unknown flow or source (404), missing
or wrong credentials (401), body too large (413), a content type the source
does not take (415). A body that is authenticated but unreadable (invalid
JSON or XML) still becomes a lead - ``source.rejected`` with the reason - and
is answered 400 with that reason and the lead id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from engine.access.guard import client_ip, failures_wait, lookup, note_failure
from engine.access.guard import presented_key as access_key
from engine.api import metrics
from engine.api.intake_auth import CredentialsUnavailableError, authenticated, presented_key
from engine.api.intake_publisher import PublishError
from engine.api.intake_service import IdempotencyConflictError, IntakeService, Lead
from engine.api.intake_store import IntakeStoreError
from engine.flows import Flow, SourceStep
from engine.intake.answers import recorded_headers
from engine.intake.bodies import body_format, decode_body, media_type
from engine.intake.config import IntakeAuth, IntakeSettings
from engine.state.errors import StateUnavailableError
from engine.web.responses import IntakeRefusal, LeadAnswer, PendingAnswer, intake_answers

router = APIRouter()
log = structlog.get_logger(__name__)
MAX_KEY_LENGTH = 255


class IntakeRefusedError(Exception):
    """A request refused before any lead exists: its status and reason."""

    def __init__(self, status: int, code: str, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.retry_after = retry_after


def refusal(exc: IntakeRefusedError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="leadflow"'} if exc.status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    body = {"outcome": "error", "reason": exc.reason, "error": exc.code}
    return JSONResponse(body, exc.status, headers=headers or None)


async def intake_service(request: Request) -> IntakeService:
    """The process's one service (one waiter consumer, one producer), started on first use."""
    state = request.app.state
    async with state.intake_lock:
        if state.intake is None:
            started = IntakeService(state.settings)
            await started.start()
            state.intake = started
    service: IntakeService = state.intake
    return service


@dataclass(frozen=True, slots=True)
class Checked:
    flow: Flow
    source: SourceStep
    intake: IntakeSettings
    headers: dict[str, str]
    body: bytes
    data: dict[str, Any] | None
    malformed_reason: str | None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise IntakeRefusedError(413, "body_too_large", f"Body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked bodies carry no length: count as they come
        size += len(chunk)
        if size > limit:
            raise IntakeRefusedError(413, "body_too_large", f"Body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _api_key_allows(
    request: Request,
    headers: dict[str, str],
    auth: IntakeAuth,
    flow_id: str,
    source_id: str,
) -> bool:
    """True if the request carries an API key (``engine.access``) with ``intake:<source>``
    (or ``intake:*``) for a flow it sees. The source's own configured key (``auth``) is
    checked apart, as before keys existed."""
    presented = access_key(request) or presented_key(headers, auth)
    if presented is None:
        return False
    try:
        principal = await run_in_threadpool(lookup, request.app.state.settings, presented)
    except StateUnavailableError:
        return False
    return (
        principal is not None
        and principal.has(f"intake:{source_id}")
        and principal.sees_flow(flow_id)
    )


async def check_request(
    service: IntakeService, request: Request, flow_id: str, source_id: str
) -> Checked:
    """Everything a request must pass before its lead exists (``IntakeRefusedError``)."""
    flow = await service.catalog.get(flow_id)
    if flow is None:
        raise IntakeRefusedError(404, "unknown_flow", f"Unknown flow: {flow_id}")
    source = flow.steps[0]
    if not isinstance(source, SourceStep) or source.id != source_id:
        raise IntakeRefusedError(404, "unknown_source", f"Unknown source: {source_id}")
    intake = source.settings.intake
    if intake is None:
        raise IntakeRefusedError(404, "unknown_source", f"Source {source_id} takes no HTTP leads")
    headers = {k.lower(): v for k, v in request.headers.items()}
    wait = failures_wait(request)
    if wait is not None:
        raise IntakeRefusedError(
            429,
            "too_many_failures",
            f"Too many failed authentications from this address; retry in {wait} s",
            retry_after=wait,
        )
    ok = await _api_key_allows(request, headers, intake.auth, flow_id, source_id)
    if not ok:
        try:
            ok = authenticated(headers, intake.auth)
        except CredentialsUnavailableError:
            # The operator's mistake, not the source's: say so without saying where the key
            # lives.
            raise IntakeRefusedError(
                503, "credentials_unavailable", "Source credentials are not configured"
            ) from None
    if not ok:
        note_failure(request, 401, "unauthorized")  # logged without the key, and counted
        raise IntakeRefusedError(401, "unauthorized", "Missing or invalid API key")
    body = await _read_body(request, intake.max_body_bytes)
    fmt = body_format(headers.get("content-type"))
    if fmt is None or fmt not in intake.formats:
        raise IntakeRefusedError(
            415,
            "unsupported_content_type",
            f"Content type {media_type(headers.get('content-type')) or '(none)'} not accepted; "
            f"this source takes {', '.join(intake.formats)}",
        )
    decoded = decode_body(body, headers["content-type"])
    data, problem = (decoded, None) if isinstance(decoded, dict) else (None, decoded.reason)
    return Checked(flow, source, intake, headers, body, data, problem)


def recorded_request(request: Request, checked: Checked) -> dict[str, Any]:
    pairs = [(k, v) for k, v in request.headers.items()]
    return {
        "method": request.method,
        "uri": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        "headers": recorded_headers(pairs, checked.intake.auth.header),
        "client_ip": client_ip(request),
    }


# The body is read raw (``check_request``): JSON, form-encoded or XML as the source allows.
LEAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The lead's fields, in a format the source's intake.formats allows",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            "application/xml": {"schema": {"type": "object"}},
        },
    }
}


@router.post(
    "/flows/{flow_id}/sources/{source_id}",
    status_code=201,
    responses={
        201: {"model": LeadAnswer, "description": "The lead and the source's verdict on it"},
        202: {"model": PendingAnswer, "description": "Not decided within timeout_ms; still is"},
        400: {
            "model": LeadAnswer | IntakeRefusal,
            "description": "An unreadable body (a source.rejected lead, its id in the answer),"
            " or a bad or missing Idempotency-Key",
        },
        **intake_answers(409),
    },
    openapi_extra=LEAD_BODY,
)
async def submit_lead(
    flow_id: str,
    source_id: str,
    request: Request,
    ping_id: Annotated[
        str | None, Query(description="the ping whose price this lead takes (or X-Ping-Id)")
    ] = None,
) -> JSONResponse:
    """Submit a lead: LeadConduit's answer once its decisive event is committed."""
    started = time.perf_counter()
    arrived_ms = time.time_ns() // 1_000_000
    response = await _submit(flow_id, source_id, request, ping_id, arrived_ms)
    metrics.observe("submit", response.status_code, time.perf_counter() - started)
    return response


async def _submit(
    flow_id: str, source_id: str, request: Request, ping_id: str | None, arrived_ms: int
) -> JSONResponse:
    service = await intake_service(request)
    try:
        checked = await check_request(service, request, flow_id, source_id)
        key = checked.headers.get("idempotency-key") or checked.headers.get("x-request-id")
        if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
            raise IntakeRefusedError(
                400, "bad_idempotency_key", f"Idempotency key must be 1-{MAX_KEY_LENGTH} chars"
            )
        ping_id = ping_id or checked.headers.get("x-ping-id")
        lead = Lead(
            flow=checked.flow,
            source=checked.source,
            intake=checked.intake,
            body=checked.body,
            content_type=checked.headers["content-type"],
            request=recorded_request(request, checked),
            malformed_reason=checked.malformed_reason,
            idempotency_key=key,
            ping_id=ping_id,
            price=None,
            arrived_ms=arrived_ms,
        )
        if ping_id is not None and checked.malformed_reason is None:
            lead = await _with_ping_price(service, lead, ping_id, key)
        metrics.INTAKE_WAITING.inc()
        try:
            answer, replayed = await service.submit(lead)
        finally:
            metrics.INTAKE_WAITING.dec()
    except IntakeRefusedError as exc:
        return refusal(exc)
    except IdempotencyConflictError:
        return refusal(
            IntakeRefusedError(
                422, "idempotency_key_reused", "Idempotency key already used with another body"
            )
        )
    except (TimeoutError, IntakeStoreError, PublishError) as exc:
        return refusal(IntakeRefusedError(503, "unavailable", f"Lead not taken: {exc}"))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if answer.status == 202:
        headers = {**(headers or {}), "Location": str(answer.body["status_url"])}
    return JSONResponse(answer.body, answer.status, headers=headers)


async def _with_ping_price(
    service: IntakeService, lead: Lead, ping_id: str, key: str | None
) -> Lead:
    """A post that follows a ping gets the pinged price, once, for one lead."""
    if key is None:
        # The ping is bound to the lead id; without a key a retry would be another lead.
        raise IntakeRefusedError(
            400, "idempotency_key_required", "A post that follows a ping needs an Idempotency-Key"
        )
    claim_id = f"ping:{ping_id}:{key}"
    price, problem = await service.store.take_ping(ping_id, lead.flow.id, lead.source.id, claim_id)
    if problem is not None:
        raise IntakeRefusedError(409, "ping_unusable", problem)
    return replace(lead, price=price)
