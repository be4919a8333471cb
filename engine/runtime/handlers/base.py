"""What every step handler shares: records, the Protocol, stamping drafts into encoded events.

A handler is where a step's pure decision meets its I/O: decoding the input,
calling a service over HTTP, stamping and encoding the events. The
transaction that makes it exactly-once lives in ``engine.runtime.step_loop``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message

from engine import __version__
from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.flows import Flow
from engine.retries import RetrySettings
from engine.runtime.kafka.dead_letter import dead_letter_headers
from engine.steps.base import EventDraft, Snapshot, StepResult
from engine.steps.completion import complete_flow
from engine.topics import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    HANDOFF_HEADER,
    TYPE_HEADER,
    dlq_topic,
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
        self.is_last = self.index == len(flow.steps) - 1
        self.codec = codec
        self.who = StepIdentity(
            flow.id, flow.version, step.id, step.name, self.index, host, __version__
        )
        self.retry: RetrySettings | None = getattr(step.settings, "retry", None)
        # LeadConduit's "integration module": which built-in integration ran the step.
        fmt = getattr(step.settings, "format", None)
        self.module_id = f"leadflow.{step.kind}" + (f".{fmt}" if fmt else "")
        self.retry_topic = retry_topic(flow.id, step.id)
        self.dlq_topic = dlq_topic(flow.id)
        # The attempt being handled; subclasses' decide() may read it.
        self.attempt = 1

    def close(self) -> None:
        """Release what the handler holds (HTTP connections); nothing by default."""

    def _emit(
        self,
        result: StepResult,
        lead_id: str,
        submitted_ms: int,
        before: Snapshot,
        timing: Timing,
        source: Message | None = None,
    ) -> list[Record]:
        drafts = list(result.events)
        for draft in drafts:
            if draft.module_id is None:
                draft.module_id = self.module_id
        key = lead_id.encode()
        extra: list[Record] = []
        last = drafts[-1]
        proceed = result.proceed
        if self.retry is not None and last.outcome == "error" and source is not None:
            if self.attempt < self.retry.attempts:
                return self._schedule_retry(drafts, lead_id, submitted_ms, before, timing, source)
            if self.retry.attempts > 1:
                # Out of attempts: the lead goes on with the error, the input is kept.
                extra.append(self._exhausted(source, key, last.reason))
        # Multi-buyer flows may stop at the first buyer that takes the lead.
        sold = last.type == "recipient.delivered" and self.flow.stop_at_first_delivery
        finished = not proceed or self.is_last or sold
        if finished:
            drafts.append(complete_flow(before, last, self.flow.id))
        events = stamp_events(drafts, self.who, lead_id, submitted_ms, before, timing, self.attempt)
        records = []
        for i, event in enumerate(events):
            headers: Headers = [(TYPE_HEADER, event["type"].encode())]
            if not finished and i == len(events) - 1:
                headers.append((HANDOFF_HEADER, b"1"))
            records.append(Record(key, self.codec.encode(event), headers))
        return records + extra

    def _schedule_retry(
        self,
        drafts: list[EventDraft],
        lead_id: str,
        submitted_ms: int,
        before: Snapshot,
        timing: Timing,
        source: Message,
    ) -> list[Record]:
        """Record the error and a ``retry.scheduled``; park the input on the retry topic.

        No sleep: the retry topic's consumer holds the record back until it is
        due (``engine.runtime.step_loop``), while other leads keep flowing.
        """
        assert self.retry is not None
        following = self.attempt + 1
        delay = self.retry.delay_ms(following)
        scheduled = EventDraft(
            "retry.scheduled",
            "success",
            f"Attempt {following} of {self.retry.attempts} in {delay}ms after: {drafts[-1].reason}",
            entity_id=drafts[-1].entity_id,
            retry_status="started",
        )
        events = stamp_events(
            [*drafts, scheduled], self.who, lead_id, submitted_ms, before, timing, self.attempt
        )
        key = lead_id.encode()
        records = [
            Record(key, self.codec.encode(e), [(TYPE_HEADER, e["type"].encode())]) for e in events
        ]
        retry_headers: Headers = [
            (HANDOFF_HEADER, b"1"),
            (ATTEMPT_HEADER, str(following).encode()),
            (DUE_HEADER, str(timing.end_ms + delay).encode()),
        ]
        records.append(Record(key, source.value() or b"", retry_headers, self.retry_topic))
        return records

    def _exhausted(self, source: Message, key: bytes, reason: str | None) -> Record:
        error = f"Retries exhausted after {self.attempt} attempts: {reason}"
        headers = dead_letter_headers(error, source.topic(), source.partition(), source.offset())
        return Record(key, source.value() or b"", headers, self.dlq_topic)


class EventInputHandler(BaseHandler):
    """Steps after the source read the previous step's hand-off event (or its retry)."""

    def handle(self, msg: Message) -> list[Record]:
        headers = header_map(msg)
        if HANDOFF_HEADER not in headers:
            return []  # terminal or intermediate events of the previous step: not ours
        start = now_ms()
        try:
            event = self.codec.decode_handoff(msg.value() or b"")
            self.attempt = int(headers.get(ATTEMPT_HEADER, b"1"))
        except (SchemaMismatchError, ValueError) as exc:
            raise PoisonMessageError(str(exc)) from exc
        snapshot: Snapshot = event["vars"]
        submitted = snapshot.get("submission.timestamp")
        submitted_ms = submitted if isinstance(submitted, int) else start
        _, produced_ms = msg.timestamp()
        result = self.decide(event, snapshot)
        if self.attempt > 1 and self.retry is not None:
            last_try = self.attempt >= self.retry.attempts
            attempted = EventDraft(
                "retry.attempted",
                "success",
                f"Attempt {self.attempt} of {self.retry.attempts}",
                entity_id=result.events[0].entity_id,
                retry_status="completed" if last_try else None,
            )
            result = StepResult([attempted, *result.events], result.proceed)
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        return self._emit(result, event["lead_id"], submitted_ms, snapshot, timing, msg)

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        raise NotImplementedError
