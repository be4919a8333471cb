"""``POST /flows/{flow_id}/sources/{source_id}/ping``: a price for a lead before its post.

Buyers with a ``ping_url`` are asked in parallel, with only the fields the
source's ``ping.fields`` allow (no PII); the best bid is the answer (200 with
the price, or "No bid") and is kept for ``ping.ttl_seconds``: a post that
names the ping (``?ping_id=`` or ``X-Ping-Id``) gets that price. Ping limits
count every ping in Postgres (``engine.state``'s cap counters); over a limit
the answer is 429 with ``retry_after``. Each ping is one ``source.pinged``
event on the source's topic, ``ping_limit_reached`` set.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine import __version__
from engine.api import metrics
from engine.api.intake import (
    LEAD_BODY,
    Checked,
    IntakeRefusedError,
    check_request,
    intake_service,
    refusal,
)
from engine.api.intake_publisher import PublishError
from engine.api.intake_service import IntakeService
from engine.api.intake_store import IntakeStoreError
from engine.events import FlowContext, StepIdentity, Timing, flow_context, stamp_events
from engine.flows import RecipientStep
from engine.ids import new_lead_id
from engine.intake.config import PingSettings
from engine.runtime.calls import CallLimits, exchange
from engine.runtime.calls.exchange import new_session
from engine.runtime.schema_registry import SchemaRegistryUnavailableError
from engine.state.errors import StateUnavailableError
from engine.steps.base import EventDraft, Outcome
from engine.steps.calls import Call, Delivery
from engine.steps.duplicates import LeadOrder
from engine.steps.pings import (
    best_bid,
    ping_fields,
    ping_limit_checks,
    ping_limit_objects,
    ping_limit_reason,
    retry_after_seconds,
)
from engine.steps.settlement import step_module
from engine.topics import ENCODING_HEADER, TYPE_HEADER, events_topic
from engine.web.responses import IntakeRefusal, PingAnswer, PingLimited, intake_answers

router = APIRouter()
HOST = socket.gethostname()


async def _ask_buyers(checked: Checked, fields: dict[str, Any]) -> float | None:
    buyers = [s for s in checked.flow.steps if isinstance(s, RecipientStep) and s.settings.ping_url]

    body = orjson.dumps(fields)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    async def ask(session: aiohttp.ClientSession, step: RecipientStep) -> Any:
        # The calls' own exchange: a wall-clock deadline, a bounded body, no redirects.
        ping = Call(
            Delivery(str(step.settings.ping_url), headers, body),
            step.settings.timeout_ms,
            "Buyer",
            auth=step.settings.auth,
        )
        answer = await exchange(session, ping, CallLimits())
        if answer.status != 200:
            return None  # a buyer that cannot answer does not bid
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return None

    async with new_session(max(1, len(buyers))) as session:
        answers = await asyncio.gather(*(ask(session, step) for step in buyers))
    return best_bid(list(answers))


async def _record(
    service: IntakeService,
    checked: Checked,
    ping_id: str,
    fields: dict[str, Any],
    draft: EventDraft,
    timing: Timing,
    limit_reached: bool | None,
    reached_counter: str | None = None,
) -> None:
    flow, source = checked.flow, checked.source
    context = flow_context(flow)
    limits = checked.intake.ping.limits if checked.intake.ping is not None else []
    if limit_reached is not None and limits:
        # Evaluated on this ping: each limit says whether it was the one that stopped it.
        evaluated = ping_limit_objects(flow.id, source.id, limits, reached_counter or "")
        context = FlowContext(context.firehose, evaluated[0] or None, evaluated[1] or None)
    who = StepIdentity(
        flow.id,
        flow.version,
        source.id,
        source.name,
        0,
        HOST,
        __version__,
        flow.retention_ms,
        context,
    )
    draft.vars = {
        **{f"lead.{k}": str(v) for k, v in fields.items()},
        "ping.id": ping_id,
        "submission.timestamp": timing.start_ms,
        "flow.id": flow.id,
        "flow.name": flow.name,
        "source.id": source.id,
        "source.name": source.name,
    }
    draft.ping_limit_reached = limit_reached
    draft.module_id = step_module("source")
    (event,) = stamp_events([draft], who, ping_id, timing.start_ms, {}, timing)
    topic = events_topic(flow.id, source.id)
    try:  # registry mode: the topic's subject registered at its first ping (then cached)
        codec = await asyncio.to_thread(service.codecs.for_topic, topic)
    except SchemaRegistryUnavailableError as exc:
        raise PublishError(f"schema registry unavailable: {exc}") from exc
    headers: list[tuple[str, str | bytes | None]] = [
        (TYPE_HEADER, b"source.pinged"),
        (ENCODING_HEADER, codec.encoding.encode()),
    ]
    await service.publisher.publish(topic, ping_id, codec.encode(event), headers)


@router.post(
    "/flows/{flow_id}/sources/{source_id}/ping",
    responses={
        200: {"model": PingAnswer, "description": "The best bid, or failure 'No bid'"},
        400: {"model": IntakeRefusal, "description": "An unreadable body"},
        **intake_answers(),
        429: {
            "model": PingLimited | IntakeRefusal,
            "description": "Over a ping limit (retry_after seconds), or too many failed"
            " authentications from this address (Retry-After)",
        },
    },
    openapi_extra=LEAD_BODY,
)
async def ping(flow_id: str, source_id: str, request: Request) -> JSONResponse:
    """Ask the flow's buyers for a price, with the source's ping fields only."""
    started = time.perf_counter()
    service = await intake_service(request)
    try:
        checked = await check_request(service, request, flow_id, source_id)
        settings = checked.intake.ping
        if settings is None:
            raise IntakeRefusedError(404, "no_pings", f"Source {source_id} takes no pings")
        if checked.data is None:
            raise IntakeRefusedError(400, "invalid_body", checked.malformed_reason or "")
        response = await _ping(service, checked, settings, checked.data)
    except IntakeRefusedError as exc:
        response = refusal(exc)
    except (TimeoutError, IntakeStoreError, PublishError, StateUnavailableError) as exc:
        # As a submit answers: Postgres or Kafka is down, the source may try again.
        response = refusal(IntakeRefusedError(503, "unavailable", f"Ping not taken: {exc}"))
    metrics.observe("ping", response.status_code, time.perf_counter() - started)
    return response


async def _ping(
    service: IntakeService, checked: Checked, settings: PingSettings, data: dict[str, Any]
) -> JSONResponse:
    start_ms = time.time_ns() // 1_000_000
    ping_id = new_lead_id(start_ms)
    fields = ping_fields(data, settings)
    checks = ping_limit_checks(checked.flow.id, checked.source.id, settings.limits, start_ms)
    if checks:
        admission = await service.admit_ping(LeadOrder(start_ms, ping_id), checks)
        if admission.capped is not None:
            why = ping_limit_reason(admission.capped)
            retry_after = retry_after_seconds(admission.capped, start_ms)
            draft = EventDraft("source.pinged", "failure", why, entity_id=checked.source.id)
            timing = Timing(start_ms, time.time_ns() // 1_000_000, 0)
            counter = admission.capped.check.key
            await _record(service, checked, ping_id, fields, draft, timing, True, counter)
            body = {
                "outcome": "failure",
                "reason": why,
                "retry_after": retry_after,
                "ping_limit_reached": True,
            }
            return JSONResponse(body, 429, headers={"Retry-After": str(retry_after)})
    price = await _ask_buyers(checked, fields)
    await service.store.add_ping(
        ping_id, checked.flow.id, checked.source.id, price, settings.ttl_seconds
    )
    outcome: Outcome = "success" if price is not None else "failure"
    reason: str | None = None if price is not None else "No bid"
    draft = EventDraft("source.pinged", outcome, reason, entity_id=checked.source.id, cost=price)
    timing = Timing(start_ms, time.time_ns() // 1_000_000, 0)
    await _record(service, checked, ping_id, fields, draft, timing, False if checks else None)
    body = {"outcome": outcome, "reason": reason, "price": price or 0.0, "ping": {"id": ping_id}}
    return JSONResponse(body, 200)
