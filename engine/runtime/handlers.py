"""Per step kind: turn one input record into the output records (events or a dead letter).

This is where a step's pure decision meets its I/O: decoding the input,
calling a buyer over HTTP, stamping and encoding the events. The transaction
that makes it exactly-once lives in ``engine.runtime.worker``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import httpx
from confluent_kafka import Message

from engine import __version__
from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.flows import FilterStep, Flow, RecipientStep, SourceStep
from engine.ids import derived_lead_id, event_id, id_timestamp_ms, is_valid_id
from engine.steps.base import Snapshot, StepResult
from engine.steps.completion import complete_flow
from engine.steps.filter import evaluate_filter
from engine.steps.recipient import Answer, build_delivery, judge_delivery
from engine.steps.source import Submission, accept_submission
from engine.topics import HANDOFF_HEADER, TYPE_HEADER
from schemas.codec import EventCodec, SchemaMismatchError

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes
    headers: Headers


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


class _BaseHandler:
    def __init__(self, flow: Flow, step_id: str, host: str, codec: EventCodec) -> None:
        self.flow = flow
        self.index = flow.index(step_id)
        step = flow.steps[self.index]
        self.is_last = self.index == len(flow.steps) - 1
        self.codec = codec
        self.who = StepIdentity(
            flow.id, flow.version, step.id, step.name, self.index, host, __version__
        )

    def close(self) -> None:
        """Release what the handler holds (HTTP connections); nothing by default."""

    def _emit(
        self,
        result: StepResult,
        lead_id: str,
        submitted_ms: int,
        before: Snapshot,
        timing: Timing,
    ) -> list[Record]:
        drafts = list(result.events)
        finished = not result.proceed or self.is_last
        if finished:
            last_vars = {**before, **drafts[-1].vars}
            drafts.append(complete_flow(last_vars, drafts[-1], self.flow.id))
        events = stamp_events(drafts, self.who, lead_id, submitted_ms, before, timing)
        key = lead_id.encode()
        records = []
        for i, event in enumerate(events):
            headers: Headers = [(TYPE_HEADER, event["type"].encode())]
            if not finished and i == len(events) - 1:
                headers.append((HANDOFF_HEADER, b"1"))
            records.append(Record(key, self.codec.encode(event), headers))
        return records


class SourceHandler(_BaseHandler):
    def __init__(self, flow: Flow, step: SourceStep, host: str, codec: EventCodec) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step

    def handle(self, msg: Message) -> list[Record]:
        start = now_ms()
        _, produced_ms = msg.timestamp()
        key = (msg.key() or b"").decode("ascii", errors="replace")
        if is_valid_id(key):
            lead_id, submitted_ms = key, id_timestamp_ms(key)
        else:
            submitted_ms = produced_ms if produced_ms > 0 else start
            lead_id = derived_lead_id(submitted_ms, msg.topic(), msg.partition(), msg.offset())
        headers = header_map(msg)
        sub = Submission(
            body=msg.value() or b"",
            lead_id=lead_id,
            submitted_ms=submitted_ms,
            flow_id=self.flow.id,
            flow_name=self.flow.name,
            source_id=headers.get("source-id", self.step.id.encode()).decode(errors="replace"),
            source_name=self.step.name,
            content_type=headers.get("content-type", b"application/json").decode(errors="replace"),
        )
        result = accept_submission(sub, self.step.settings)
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        return self._emit(result, lead_id, submitted_ms, {}, timing)


class _EventInputHandler(_BaseHandler):
    """Steps after the source read the previous step's hand-off event."""

    def handle(self, msg: Message) -> list[Record]:
        if HANDOFF_HEADER not in header_map(msg):
            return []  # terminal or intermediate events of the previous step: not ours
        start = now_ms()
        try:
            event = self.codec.decode(msg.value() or b"")
        except SchemaMismatchError as exc:
            raise PoisonMessageError(str(exc)) from exc
        snapshot: Snapshot = event["vars"]
        submitted = snapshot.get("submission.timestamp")
        submitted_ms = submitted if isinstance(submitted, int) else start
        _, produced_ms = msg.timestamp()
        result = self.decide(event, snapshot)
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        return self._emit(result, event["lead_id"], submitted_ms, snapshot, timing)

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        raise NotImplementedError


class FilterHandler(_EventInputHandler):
    def __init__(self, flow: Flow, step: FilterStep, host: str, codec: EventCodec) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        return evaluate_filter(snapshot, self.step.settings, self.step.id)


class RecipientHandler(_EventInputHandler):
    def __init__(
        self, flow: Flow, step: RecipientStep, host: str, codec: EventCodec, http: httpx.Client
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        self.http = http

    def decide(self, event: LeadEvent, snapshot: Snapshot) -> StepResult:
        settings = self.step.settings
        # The id this step's first event will get: the buyer's idempotency key.
        key = event_id(
            event["lead_id"], int(snapshot.get("submission.timestamp") or 0), self.index, 0
        )
        delivery = build_delivery(snapshot, settings, key)
        sent = now_ms()
        t0 = time.perf_counter()
        try:
            resp = self.http.post(
                delivery.url,
                content=delivery.body,
                headers=delivery.headers,
                timeout=settings.timeout_ms / 1000,
            )
            answer = Answer(
                resp.status_code,
                {
                    k: v
                    for k, v in resp.headers.items()
                    if k.lower() in ("content-type", "x-request-id")
                },
                resp.content,
                wait_ms=int((time.perf_counter() - t0) * 1000),
                sent_at_ms=sent,
                received_at_ms=now_ms(),
            )
        except httpx.TimeoutException:
            answer = Answer(
                None,
                {},
                b"",
                f"Buyer timeout after {settings.timeout_ms}ms",
                int((time.perf_counter() - t0) * 1000),
                sent,
                now_ms(),
            )
        except httpx.HTTPError as exc:
            answer = Answer(
                None,
                {},
                b"",
                f"Delivery failed: {type(exc).__name__}",
                int((time.perf_counter() - t0) * 1000),
                sent,
                now_ms(),
            )
        return judge_delivery(snapshot, settings, self.step.id, delivery, answer)

    def close(self) -> None:
        self.http.close()


def make_handler(flow: Flow, step_id: str, host: str, codec: EventCodec) -> StepHandler:
    step = flow.step(step_id)
    if isinstance(step, SourceStep):
        return SourceHandler(flow, step, host, codec)
    if isinstance(step, FilterStep):
        return FilterHandler(flow, step, host, codec)
    return RecipientHandler(flow, step, host, codec, httpx.Client())
