"""One consumer per API process that tells waiting requests their lead's decisive event.

Requests register a waiter (lead id -> the event types that decide it) in a
shared correlation map *before* they publish their lead, and the consumer
thread settles the waiter when such an event of that lead comes by. No
consumer per request, no polling of Postgres.

The consumer is assigned partitions itself (no group rebalancing: every API
process must see every partition, since any process may be waiting for any
lead) and starts each topic at its end as it stood when the flow was first
tracked; ``track`` returns only once that position is fixed, so an event of a
lead published afterwards cannot be missed. It reads committed records only
(read_committed), i.e. exactly the events the engine's transactions committed.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaException, Message, TopicPartition

from engine.flows import Flow
from engine.runtime.handlers.base import header_map
from engine.runtime.kafka.clients import new_admin, new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.runtime.kafka.offsets import list_offsets
from engine.runtime.schema_registry import reading_codec
from engine.settings import Settings
from engine.topics import TYPE_HEADER, flow_event_topics
from schemas.codec import EventCodec, SchemaMismatchError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request answers from: the decisive event's fields."""

    event_id: str
    type: str
    outcome: str
    reason: str | None
    cost: float | None


@dataclass(frozen=True, slots=True)
class _Waiter:
    types: frozenset[str]
    future: asyncio.Future[Verdict]
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True, slots=True)
class _Track:
    topics: list[str]
    done: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Verdict], verdict: Verdict) -> None:
    if not future.done():
        future.set_result(verdict)


def _resolve(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class WaiterHub:
    def __init__(self, settings: Settings, codec: EventCodec | None = None) -> None:
        self._codec = codec or reading_codec(settings)
        # A group id is required but never used: partitions are assigned, nothing is committed.
        group = f"leadflow.intake-waiters.{uuid.uuid4().hex}"
        self._consumer = new_consumer(settings, group, **{"fetch.wait.max.ms": 10})
        self._consume_errors = ConsumeErrors("intake waiters")
        self._admin = new_admin(settings)
        self._waiters: dict[str, list[_Waiter]] = {}
        self._lock = threading.Lock()
        self._assigned: set[str] = set()
        self._tracks: queue.SimpleQueue[_Track] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-waiters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    async def track(self, flow: Flow) -> None:
        """Follow the flow's event topics from their current end (once per topic)."""
        topics = [t for t in flow_event_topics(flow) if t not in self._assigned]
        if not topics:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._tracks.put(_Track(topics, done, loop))
        await done

    def expect(self, lead_id: str, types: frozenset[str]) -> asyncio.Future[Verdict]:
        """A future settled by the lead's first event of one of ``types``; call
        ``forget`` when no longer waiting for it."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(types, loop.create_future(), loop)
        with self._lock:
            self._waiters.setdefault(lead_id, []).append(waiter)
        return waiter.future

    def forget(self, lead_id: str, future: asyncio.Future[Verdict]) -> None:
        with self._lock:
            left = [w for w in self._waiters.get(lead_id, []) if w.future is not future]
            if left:
                self._waiters[lead_id] = left
            else:
                self._waiters.pop(lead_id, None)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()

    # -- the consumer thread -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._assign_pending()
            try:
                messages = fetch(self._consumer, 1000, 0.05, self._consume_errors)
            except KafkaException as exc:
                log.warning("intake waiters: consume failed", error=str(exc))
                continue
            for msg in messages:
                self._dispatch(msg)

    def _assign_pending(self) -> None:
        while True:
            try:
                track = self._tracks.get_nowait()
            except queue.Empty:
                return
            error: Exception | None = None
            try:
                self._assign(track.topics)
            except KafkaException as exc:
                error = exc
            track.loop.call_soon_threadsafe(_resolve, track.done, error)

    def _assign(self, topics: list[str]) -> None:
        wanted = [t for t in topics if t not in self._assigned]
        if not wanted:
            return
        metadata = self._consumer.list_topics(timeout=10).topics
        ends = list_offsets(
            self._admin,
            [
                (topic, partition)
                for topic in wanted
                # Not created yet: tracked again by the next request.
                if topic in metadata and metadata[topic].error is None
                for partition in metadata[topic].partitions
            ],
            "latest",
        )
        parts = [TopicPartition(t, p, end) for (t, p), end in ends.items()]
        if parts:
            self._consumer.incremental_assign(parts)
        self._assigned.update({p.topic for p in parts})

    def _dispatch(self, msg: Message) -> None:
        lead_id = (msg.key() or b"").decode("ascii", errors="replace")
        with self._lock:
            waiters = list(self._waiters.get(lead_id, ()))
        if not waiters:
            return
        type_ = header_map(msg).get(TYPE_HEADER, b"").decode(errors="replace")
        matching = [w for w in waiters if type_ in w.types]
        if not matching:
            return
        try:
            event = self._codec.decode(msg.value() or b"")
        except SchemaMismatchError:
            return
        verdict = Verdict(
            event["id"], event["type"], event["outcome"], event["reason"], event["cost"]
        )
        for waiter in matching:
            waiter.loop.call_soon_threadsafe(_settle, waiter.future, verdict)
