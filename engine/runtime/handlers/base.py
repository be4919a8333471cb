"""What every step handler shares: records, the Protocol, stamping drafts into encoded events.

A handler is where a step's pure decision meets its I/O: decoding the input,
calling a service over HTTP, stamping and encoding the events. The
transaction that makes it exactly-once lives in ``engine.runtime.worker``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message

from engine import __version__
from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.flows import Flow
from engine.steps.base import Snapshot, StepResult
from engine.steps.completion import complete_flow
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


class EventInputHandler(BaseHandler):
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
