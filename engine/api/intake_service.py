"""Submitting a lead over HTTP: claim its id, publish it, wait for its decisive event.

The order matters: the waiter is registered and the flow's topics are tracked
*before* the lead is published, so its decisive event cannot pass unseen. A
timed-out request leaves the lead to the engine (it is on the intake topic,
processed once); with an idempotency key the answer is still stored when the
event comes, so the source's retry gets it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import structlog

from engine.api.intake_publisher import IntakePublisher, PublishError
from engine.api.intake_store import IntakeStore, migrate_intake
from engine.api.waiters import Verdict, WaiterHub
from engine.flows import Flow, SourceStep
from engine.ids import new_lead_id
from engine.intake.answers import IntakeAnswer, lead_answer, pending_answer
from engine.intake.config import IntakeSettings
from engine.intake.records import intake_headers
from engine.runtime.flow_catalog import FlowCatalog
from engine.runtime.schema_registry import TopicCodecs
from engine.runtime.sealer import LeadSealer
from engine.sealing import MasterKeyError
from engine.settings import Settings
from engine.state.postgres import migrate_state
from engine.state.store import Admission, StateStore
from engine.steps.cap_checks import CapCheck
from engine.steps.duplicates import LeadOrder
from engine.topics import intake_topic

log = structlog.get_logger(__name__)

SOURCE_VERDICTS = frozenset({"source.accepted", "source.rejected"})
COMPLETION = frozenset({"flow.completed"})
# A key whose first request has not published after this long is taken for
# a crashed request, and its retry publishes the lead (same id) itself.
IN_FLIGHT_SECONDS = 5.0
# How long a timed-out request keeps listening, to store the answer for a retry.
LATE_ANSWER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Lead:
    """A lead as the endpoint received it, credentials and format already checked."""

    flow: Flow
    source: SourceStep
    intake: IntakeSettings
    body: bytes
    content_type: str
    request: dict[str, Any]  # method, uri, masked headers
    malformed_reason: str | None
    idempotency_key: str | None
    ping_id: str | None
    price: float | None
    # When the request arrived (epoch ms): the lead's id, so its submission time and
    # source.submitted's timestamp, come from it, before the body was read and checked.
    arrived_ms: int | None = None


class IdempotencyConflictError(Exception):
    """The key was first used with another body."""


def answer_from(lead_id: str, verdict: Verdict) -> IntakeAnswer:
    """The 201 for a decisive event; the source step records the same on source.submitted."""
    price = 0.0 if verdict.type == "source.rejected" else (verdict.cost or 0.0)
    return lead_answer(lead_id, verdict.outcome, verdict.reason, price)


class IntakeService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = FlowCatalog(settings)
        self.hub = WaiterHub(settings)
        self.publisher = IntakePublisher(settings)
        # Events the API writes itself (pings), framed as the deployment says.
        self.codecs = TopicCodecs(settings)
        self.store = IntakeStore(settings)
        self._late: set[asyncio.Task[None]] = set()
        # Ping limits use the caps' counters; one connection, used by one thread at a time.
        self._state: StateStore | None = None
        self._state_lock = asyncio.Lock()
        # Per flow version, for flows that seal; one thread at a time (a key store connection).
        self._sealers: dict[tuple[str, int], LeadSealer] = {}
        self._seal_lock = asyncio.Lock()

    async def start(self) -> None:

        await asyncio.to_thread(migrate_intake, self.settings)
        await self.store.open()
        self.hub.start()

    async def admit_ping(self, ping: LeadOrder, checks: list[CapCheck]) -> Admission:
        """Count the ping in every limit, or say which limit is full."""
        async with self._state_lock:
            if self._state is None:
                await asyncio.to_thread(migrate_state, self.settings)
                self._state = StateStore(self.settings)
            state = self._state
            return await asyncio.to_thread(state.admit, ping, checks, None)

    async def close(self) -> None:
        if self._state is not None:
            self._state.close()
        for sealer in self._sealers.values():
            sealer.close()
        for task in list(self._late):
            task.cancel()
        self.hub.close()
        self.publisher.close()
        await self.store.close()
        self.catalog.close()

    async def submit(self, lead: Lead) -> tuple[IntakeAnswer, bool]:
        """The answer, and whether it is a stored answer replayed for a retry.
        Raises ``IdempotencyConflictError``, ``IntakeStoreError``, ``PublishError``."""
        flow, key = lead.flow, lead.idempotency_key
        lead_id, publish = new_lead_id(lead.arrived_ms), True
        if key is not None:
            claim = await self.store.claim(
                flow.id, lead.source.id, key, lead_id, hashlib.sha256(lead.body).digest()
            )
            if not claim.same_body:
                raise IdempotencyConflictError(key)
            if claim.answer is not None and claim.answer_status is not None:
                return IntakeAnswer(claim.answer_status, claim.answer), True
            lead_id = claim.lead_id
            in_flight = not claim.created and claim.age_seconds < IN_FLIGHT_SECONDS
            publish = not claim.published and (claim.created or not in_flight)

        if lead.malformed_reason is not None:
            # The source step rejects it with this very reason: no need to wait.
            if publish:
                await self._publish(lead, lead_id)
            answer = lead_answer(lead_id, "failure", lead.malformed_reason, 0.0, malformed=True)
            await self._store_answer(lead, answer)
            return answer, False

        await self.hub.track(flow)
        decisive = COMPLETION if lead.intake.wait_for == "completion" else SOURCE_VERDICTS
        future = self.hub.expect(lead_id, decisive)
        try:
            if publish:
                await self._publish(lead, lead_id)
            verdict = await asyncio.wait_for(asyncio.shield(future), lead.intake.timeout_ms / 1000)
        except TimeoutError:
            self._answer_late(lead, lead_id, future)
            return pending_answer(lead_id, f"/leads/{lead_id}/events"), False
        except BaseException:
            self.hub.forget(lead_id, future)
            raise
        self.hub.forget(lead_id, future)
        answer = answer_from(lead_id, verdict)
        await self._store_answer(lead, answer)
        return answer, False

    async def _publish(self, lead: Lead, lead_id: str) -> None:
        headers = intake_headers(
            lead.content_type, lead.source.id, lead.request, lead.ping_id, lead.price
        )
        body = lead.body
        if lead.flow.seals:
            body, content_type = await self._sealed(lead, lead_id)
            headers = intake_headers(
                content_type, lead.source.id, lead.request, lead.ping_id, lead.price
            )
        await self.publisher.publish(intake_topic(lead.flow.id), lead_id, body, headers)
        if lead.idempotency_key is not None:
            await self.store.mark_published(lead.flow.id, lead.source.id, lead.idempotency_key)

    async def _sealed(self, lead: Lead, lead_id: str) -> tuple[bytes, str]:
        """The body with its sensitive fields sealed under the lead's new key. Without a
        master key the lead is refused (503), never published in clear."""
        async with self._seal_lock:
            version = (lead.flow.id, lead.flow.version)
            sealer = self._sealers.get(version)
            if sealer is None:
                try:
                    made = LeadSealer.for_flow(lead.flow, self.settings)
                except MasterKeyError as exc:
                    raise PublishError(str(exc)) from None
                assert made is not None  # the flow seals
                sealer = self._sealers[version] = made
            return await asyncio.to_thread(sealer.seal_body, lead_id, lead.body, lead.content_type)

    async def _store_answer(self, lead: Lead, answer: IntakeAnswer) -> None:
        if lead.idempotency_key is not None:
            await self.store.save_answer(
                lead.flow.id, lead.source.id, lead.idempotency_key, answer.status, answer.body
            )

    def _answer_late(self, lead: Lead, lead_id: str, future: asyncio.Future[Verdict]) -> None:
        """Keep listening after a timeout: a keyed lead's retry then gets the real answer."""
        if lead.idempotency_key is None:
            self.hub.forget(lead_id, future)
            return

        async def wait_and_store() -> None:
            try:
                verdict = await asyncio.wait_for(future, LATE_ANSWER_SECONDS)
                await self._store_answer(lead, answer_from(lead_id, verdict))
            except Exception as exc:  # a late answer is a courtesy: never an error
                log.info("late intake answer not stored", lead_id=lead_id, error=type(exc).__name__)
            finally:
                self.hub.forget(lead_id, future)

        task = asyncio.create_task(wait_and_store())
        self._late.add(task)
        task.add_done_callback(self._late.discard)
