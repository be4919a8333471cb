"""What every step handler shares: records, the Protocol, stamping drafts into encoded events.

A handler is where a step's pure decision meets its I/O: decoding the input,
calling a service over HTTP, stamping and encoding the events. What the
decision comes to (retry, dead letter, completion, hand-off) is settled in
``engine.steps.settlement``; a handler only writes it. The transaction that
makes it exactly-once lives in ``engine.runtime.step_loop``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeAlias, cast

from confluent_kafka import Message

from engine import __version__
from engine.errors import TransientStepError
from engine.events import LeadEvent, StepIdentity, Timing, flow_context, stamp_events
from engine.flows import Flow
from engine.runtime.kafka.dead_letter import dead_letter_headers
from engine.runtime.schema_registry import SchemaRegistryUnavailableError
from engine.runtime.sealer import LeadSealer
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call, waited_on
from engine.steps.settlement import StepPlace, settle, step_module
from engine.topics import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    ENCODING_HEADER,
    HANDOFF_HEADER,
    RETRY_CAUSE_HEADER,
    TYPE_HEADER,
    dlq_topic,
    events_topic,
    retry_topic,
)
from schemas.codec import EventCodec, SchemaMismatchError

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes
    headers: Headers
    topic: str | None = None  # None: the step's own events topic


@dataclass(frozen=True, slots=True)
class Asking:
    """A step's decision that waits on calls: the calls to make (at once), and what their
    answers (in the calls' order) decide - a result, or more calls (an auction's post after
    its pings). ``window_ms``: answers not in by then are cut (a bid window)."""

    calls: list[Call]
    then: Callable[[list[Answer]], StepResult | Asking]
    window_ms: int | None = None
    # Undoes what planning held (a cap slot) when the calls cannot be made at all.
    abandon: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A record whose step is ``Asking``: the calls, and what their answers come to - the
    record's outputs, or more calls."""

    calls: list[Call]
    resume: Callable[[list[Answer]], list[Record] | Waiting]
    window_ms: int | None = None
    abandon: Callable[[], None] = lambda: None


# What starting a record gives: its outputs at once, or the calls it waits on.
Started: TypeAlias = "list[Record] | Waiting"


class PoisonMessageError(Exception):
    """The input cannot be processed at all; it goes to the dead-letter topic."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def header_map(msg: Message) -> dict[str, bytes]:
    """Message headers as a dict of bytes (the last value wins for repeated keys)."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.encode() if isinstance(v, str) else v for k, v in pairs if v is not None}


class StepHandler(Protocol):
    def handle(self, msg: Message) -> list[Record]: ...

    def close(self) -> None: ...


class BaseHandler:
    def __init__(self, flow: Flow, step_id: str, host: str, codec: EventCodec) -> None:
        self.flow = flow
        self.index = flow.index(step_id)
        step = flow.steps[self.index]
        self.codec = codec
        self.encoding = (ENCODING_HEADER, codec.encoding.encode())
        self.who = StepIdentity(
            flow.id,
            flow.version,
            step.id,
            step.name,
            self.index,
            host,
            __version__,
            flow.retention_ms,
            flow_context(flow),
        )
        self.place = StepPlace(
            flow.id,
            is_last=self.index == len(flow.steps) - 1,
            stop_at_first_delivery=flow.stop_at_first_delivery,
            module_id=step_module(step.kind),
            retry=getattr(step.settings, "retry", None),
        )
        self.retry_topic = retry_topic(flow.id, step.id)
        self.dlq_topic = dlq_topic(flow.id)
        # Set by ``make_handler`` for a flow that declares sensitive fields (where a missing
        # master key stops the worker before it writes anything); None: nothing is sealed.
        self.sealer: LeadSealer | None = None

    def prefetch(self, messages: list[Message]) -> None:
        """Optional hook a loop calls with each fetched batch: the batch's lead keys in one
        query (a loop that never calls it still works, a query per lead)."""
        if self.sealer is not None:
            self.sealer.prefetch(messages)

    def close(self) -> None:
        """Release what the handler holds (HTTP connections, the key store's connection)."""
        if self.sealer is not None:
            self.sealer.close()

    def _emit(
        self,
        result: StepResult,
        lead_id: str,
        submitted_ms: int,
        before: Snapshot,
        timing: Timing,
        source: Message,
        attempt: int = 1,
        *,
        retried: str | None = None,
        seal_request_body: bool = False,
    ) -> list[Record]:
        """Settle the step's result (``engine.steps.settlement``) and write what it says:
        the stamped events, then the input on the retry or the dead-letter topic.
        ``retried``: on a later attempt, the failure it retries (its record's header)."""
        settled = settle(result, before, self.place, attempt, timing.end_ms, retried)
        events = stamp_events(
            settled.events, self.who, lead_id, submitted_ms, before, timing, attempt
        )
        key = lead_id.encode()
        hand_off_at = len(events) - 1 if settled.hand_off else -1
        records = []
        if self.sealer is not None:
            sealer, whole = self.sealer, seal_request_body
            events = [
                sealer.seal_event(event, whole_request_body=whole, read=before) for event in events
            ]
        for i, event in enumerate(events):
            headers: Headers = [(TYPE_HEADER, event["type"].encode()), self.encoding]
            if i == hand_off_at:
                headers.append((HANDOFF_HEADER, b"1"))
            records.append(Record(key, self.codec.encode(event), headers))
        if settled.retry is not None:
            # No sleep: the retry topic's consumer holds the record back until it is
            # due (``engine.runtime.step_loop``), while other leads keep flowing.
            retry_headers: Headers = [
                (HANDOFF_HEADER, b"1"),
                (ATTEMPT_HEADER, str(settled.retry.attempt).encode()),
                (DUE_HEADER, str(settled.retry.due_ms).encode()),
            ]
            # The failure retried, as retry.scheduled records it (sealed where it quotes a
            # sealed value): the next attempt's retry.attempted names it.
            cause = events[-1].get("original_failure")
            if isinstance(cause, str):
                retry_headers.append((RETRY_CAUSE_HEADER, cause.encode()))
            records.append(Record(key, source.value() or b"", retry_headers, self.retry_topic))
        if settled.dead_letter is not None:
            headers = dead_letter_headers(
                settled.dead_letter, source.topic(), source.partition(), source.offset()
            )
            records.append(Record(key, source.value() or b"", headers, self.dlq_topic))
        return records


class _HandOff:
    """A hand-off event as a fused successor reads it (``EventInputHandler.successor``): the
    methods of a consumed ``Message`` that a handler uses, over the bytes just encoded.
    Produced "now" (no input lag: it never waited on a topic); where it would have come
    from (a dead letter names it) is the predecessor's events topic, at the input's place."""

    def __init__(self, value: bytes, topic: str, source: Message) -> None:
        self._value, self._topic, self._source = value, topic, source
        self._at = now_ms()

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._source.key()

    def headers(self) -> Headers:
        return [(HANDOFF_HEADER, b"1")]

    def timestamp(self) -> tuple[int, int]:
        return (1, self._at)  # TIMESTAMP_CREATE_TIME

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int | None:
        return self._source.partition()

    def offset(self) -> int | None:
        return self._source.offset()


class EventInputHandler(BaseHandler):
    """Steps after the source read the previous step's hand-off event (or its retry).

    ``start`` takes a record as far as it goes without waiting on a service: its outputs,
    or the calls its step asks for and what their answers come to (``Waiting``). A loop
    that keeps many records in flight (``engine.runtime.concurrent_loop``) makes those
    calls at once; ``handle`` makes them one after the other, for the one-at-a-time loop.
    """

    # The next step, when it is pure (a filter: no calls, no state, no retries) and runs in
    # this step's worker (``Settings.fuse_pure_steps``): its decision is made on this step's
    # hand-off in the same transaction, and its events go to its own topic as its worker
    # would have written them. Per lead that is one topic hop, one commit and one process
    # fewer; the events, their topics and their order are the same. The hand-off event then
    # goes out without the hand-off header, so the successor's own worker (still running,
    # for hand-offs written before the fusion) does not decide the lead a second time.
    successor: EventInputHandler | None = None

    def close(self) -> None:
        super().close()
        if self.successor is not None:
            self.successor.close()

    def handle(self, msg: Message) -> list[Record]:
        started = self.start(msg)
        while isinstance(started, Waiting):
            try:
                answers = [self.call(call) for call in started.calls]
            except Exception:
                started.abandon()  # a bug mid-call must not keep what was held
                raise
            started = started.resume(answers)
        return started

    def start(self, msg: Message) -> Started:
        headers = header_map(msg)
        if HANDOFF_HEADER not in headers:
            return []  # terminal or intermediate events of the previous step: not ours
        start = now_ms()
        try:
            event = self.codec.decode_handoff(msg.value() or b"")
            attempt = int(headers.get(ATTEMPT_HEADER, b"1"))
            cause = headers.get(RETRY_CAUSE_HEADER)
            retried = None if cause is None else cause.decode(errors="replace")
        except (SchemaMismatchError, ValueError) as exc:
            # An unknown schema id lands here too, the id in the error.
            raise PoisonMessageError(str(exc)) from exc
        except SchemaRegistryUnavailableError as exc:
            # Nothing wrong with the record: the writer schema cannot be fetched now.
            raise TransientStepError(f"schema registry unavailable: {exc}") from exc
        snapshot: Snapshot = event["vars"]
        if self.sealer is not None:
            snapshot = self.sealer.open_snapshot(snapshot)  # the step decides on clear values
        submitted = snapshot.get("submission.timestamp")
        submitted_ms = submitted if isinstance(submitted, int) else start
        _, produced_ms = msg.timestamp()
        lag = max(0, start - produced_ms) if produced_ms > 0 else 0

        def finish(decided: StepResult | Asking, waited: int) -> Started:
            # ``waited``: the service wait so far, over rounds of calls (an auction's
            # pings, then its post), which every event of the handling reports.
            if isinstance(decided, Asking):
                then = decided.then

                def resume(answers: list[Answer]) -> Started:
                    return finish(then(answers), waited + waited_on(answers))

                return Waiting(decided.calls, resume, decided.window_ms, decided.abandon)
            timing = Timing(start, now_ms(), lag, waited)
            records = self._emit(
                decided,
                event["lead_id"],
                submitted_ms,
                snapshot,
                timing,
                msg,
                attempt,
                retried=retried,
            )
            return records if self.successor is None else self._fused(records, msg)

        return finish(self.plan(event, snapshot), 0)

    def _fused(self, records: list[Record], source: Message) -> list[Record]:
        """``records`` with the successor's decision on the hand-off among them, in its place."""
        successor = self.successor
        assert successor is not None
        own_topic = events_topic(self.flow.id, self.who.step_id)
        successor_topic = events_topic(successor.flow.id, successor.who.step_id)
        out: list[Record] = []
        for record in records:
            if record.topic is not None or (HANDOFF_HEADER, b"1") not in record.headers:
                out.append(record)
                continue
            headers = [h for h in record.headers if h[0] != HANDOFF_HEADER]
            out.append(replace(record, headers=headers))
            hand_off = cast(Message, _HandOff(record.value, own_topic, source))
            decided = successor.start(hand_off)
            if not isinstance(decided, list):  # only pure steps are fused: make_handler's rule
                raise TypeError(f"step {successor.who.step_id} waits on calls: not fusable")
            out.extend(replace(r, topic=r.topic or successor_topic) for r in decided)
        return out

    def plan(self, event: LeadEvent, snapshot: Snapshot) -> StepResult | Asking:
        """The step's decision for the lead, or the calls it waits on first."""
        return self.decide(event, snapshot)

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        """The step's decision for the lead (and the I/O it needs): one per step kind."""
        raise NotImplementedError

    def call(self, call: Call) -> Answer:
        """One call made and answered, for ``handle``; only steps that call have any."""
        raise NotImplementedError(f"step {self.who.step_id} makes no calls")
