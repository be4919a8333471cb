"""A destination's lifecycle: verified and activated, deactivated by failures, disabled and
enabled by its user; each change recorded as an ``event_destination.*`` event.

The current state lives in Postgres (``streamers.destination_state``), which
every streamer reads to decide whether to write; the changes are also
published as JSON events on the ``leadflow.destinations`` topic, keyed by
``FLOW/DESTINATION``, as the audit trail the seeds' ``object.action`` events
describe::

    {"id": "01K...", "type": "event_destination.deactivated", "flow_id": "demo",
     "destination": "s3-leadflow-events-demo", "reason": "...", "at": "2026-...Z"}

An event is published for every change of state, after the change is committed.
If Kafka refuses it, the change stands (the table is what streamers obey) and the
missing event is logged: the topic is an audit trail, not the source of truth.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.flows import Flow
from engine.ids import new_lead_id
from engine.runtime.kafka.clients import new_admin, new_producer
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.settings import Settings
from streamers.destination_state import (
    DestinationState,
    State,
    open_state,
    read_state,
    transition,
)
from streamers.verification import StoreOpener, verify_destination

log = structlog.get_logger(__name__)

DESTINATIONS_TOPIC = "leadflow.destinations"
ACTIVATED: Final = "event_destination.activated"
DEACTIVATED: Final = "event_destination.deactivated"
EventType = Literal["event_destination.activated", "event_destination.deactivated"]

_ANY: frozenset[State | None] = frozenset({None, "active", "deactivated", "disabled"})
# Verification at apply (or `streamer verify`) never overrides the user's "disabled".
_NOT_DISABLED: frozenset[State | None] = frozenset({None, "active", "deactivated"})


class LifecycleError(LeadflowError):
    """A lifecycle change could not be made (the flow or destination is unknown)."""


@dataclass(frozen=True, slots=True)
class DestinationEvent:
    """One ``event_destination.*`` record of the ``leadflow.destinations`` topic."""

    id: str
    type: EventType
    flow_id: str
    destination: str
    reason: str
    at: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def create(flow_id: str, destination: str, to: State, reason: str) -> DestinationEvent:
        now = datetime.now(UTC)
        return DestinationEvent(
            # A ULID: unique, and sorts by the time of the change.
            id=new_lead_id(int(now.timestamp() * 1000)),
            type=ACTIVATED if to == "active" else DEACTIVATED,
            flow_id=flow_id,
            destination=destination,
            reason=reason,
            at=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a lifecycle call did to one destination."""

    flow_id: str
    destination: str
    name: str
    state: State | None  # after the call; None: never recorded
    reason: str | None  # why it is in that state, or why the call changed nothing
    changed: bool  # the state changed (and an event was published)
    verification_failed: bool = False


def ensure_destinations_topic(settings: Settings) -> None:
    """Create ``leadflow.destinations`` if missing: one partition (one order of changes),
    kept forever (a few records per destination per day, and they are the audit trail)."""
    topic = TopicSpec(DESTINATIONS_TOPIC, 1, settings.topic_replication, {"retention.ms": "-1"})
    ensure_topics(new_admin(settings), [topic], timeout=10.0)


def read_events(
    settings: Settings, flow_id: str | None = None, timeout: float = 10.0
) -> list[DestinationEvent]:
    """Every lifecycle event recorded so far (of one flow, if given), oldest first;
    ``LifecycleError`` if the topic could not be read to its end within ``timeout``."""
    ensure_destinations_topic(settings)
    reader = TopicReader(settings, [(DESTINATIONS_TOPIC, 0)], "destinations")
    try:
        records, complete = reader.read_to_end(timeout)
    finally:
        reader.close()
    if not complete:
        raise LifecycleError(f"{DESTINATIONS_TOPIC} could not be read to its end in {timeout:g} s")
    events = [DestinationEvent(**orjson.loads(msg.value() or b"{}")) for msg in records]
    return [e for e in events if flow_id is None or e.flow_id == flow_id]


class Lifecycle:
    """Changes destinations' states and records the events; one per process is enough.

    Every call opens its own short connection: lifecycle changes are rare
    (apply, a user's command, a deactivation), so nothing is held open.
    """

    def __init__(self, settings: Settings, *, opener: StoreOpener | None = None) -> None:
        self.settings = settings
        self._opener = opener
        self._producer: Producer | None = None
        self._publishing = threading.Lock()  # verify_flow verifies from several threads

    def state(self, flow_id: str, destination: str) -> DestinationState | None:
        with open_state(self.settings) as conn:
            return read_state(conn, flow_id, destination)

    def verify(self, flow: Flow, destination: Destination, *, by: str) -> Outcome:
        """Verify and record: active if it passes, deactivated with the reason if not.

        A destination the user disabled is verified but stays disabled.
        """
        failure = verify_destination(destination, self.settings, flow.id, opener=self._opener)
        if failure is None:
            return self._move(flow.id, destination, "active", f"verified at {by}", _NOT_DISABLED)
        reason = f"verification failed: {failure}"
        outcome = self._move(flow.id, destination, "deactivated", reason, _NOT_DISABLED)
        return _failed(outcome, reason)

    def enable(self, flow: Flow, destination: Destination) -> Outcome:
        """The user's enable: verify again, whatever the state; active only if it passes."""
        failure = verify_destination(destination, self.settings, flow.id, opener=self._opener)
        if failure is None:
            return self._move(flow.id, destination, "active", "enabled by the user", _ANY)
        reason = f"verification failed: {failure}"
        return _failed(self._move(flow.id, destination, "deactivated", reason, _ANY), reason)

    def disable(self, flow_id: str, destination: Destination) -> Outcome:
        """The user's disable: streamers pause (keeping their position) until ``enable``."""
        return self._move(flow_id, destination, "disabled", "disabled by the user", _ANY)

    def deactivate(self, flow_id: str, destination: Destination, reason: str) -> Outcome:
        """A streamer's deactivation after failed deliveries; only an active destination moves
        (a user who disabled or re-enabled it meanwhile keeps the last word)."""
        return self._move(flow_id, destination, "deactivated", reason, frozenset({"active"}))

    def ensure_known(self, flow: Flow, destination: Destination) -> DestinationState:
        """The destination's state, verifying it first if it has none yet
        (a flow run from a file, never applied): every streamed destination is verified."""
        current = self.state(flow.id, destination.key)
        if current is not None:
            return current
        self.verify(flow, destination, by="streamer start")
        known = self.state(flow.id, destination.key)
        if known is None:  # only if the row was deleted in between
            raise LifecycleError(f"destination {destination.key} of flow {flow.id} has no state")
        return known

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    def _move(
        self,
        flow_id: str,
        destination: Destination,
        to: State,
        reason: str,
        allowed_from: frozenset[State | None],
    ) -> Outcome:
        key = destination.key
        with open_state(self.settings) as conn:
            previous = transition(
                conn, flow_id, key, destination.name, to, reason,
                allowed_from=allowed_from, verified=to == "active",
            )  # fmt: skip
            if previous == "refused":
                current = read_state(conn, flow_id, key)
                state = current.state if current else None
                why = f"left {state}: {current.reason if current else ''}".rstrip(": ")
                return Outcome(flow_id, key, destination.name, state, why, changed=False)
        changed = previous != to
        if changed:
            self._publish(DestinationEvent.create(flow_id, key, to, reason))
            say = log.info if to == "active" else log.warning
            say("destination " + to, flow=flow_id, destination=key, reason=reason)
        return Outcome(flow_id, key, destination.name, to, reason, changed=changed)

    def _publish(self, event: DestinationEvent) -> None:
        with self._publishing:
            self._publish_now(event)

    def _publish_now(self, event: DestinationEvent) -> None:
        try:
            if self._producer is None:
                ensure_destinations_topic(self.settings)
                self._producer = new_producer(self.settings)
            key = f"{event.flow_id}/{event.destination}".encode()
            self._producer.produce(DESTINATIONS_TOPIC, event.to_json(), key)
            if self._producer.flush(10):
                raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "not delivered"))
        except KafkaException as exc:
            log.error(
                "lifecycle event not recorded (the state change stands)",
                event_id=event.id, type=event.type, flow=event.flow_id,
                destination=event.destination, error=str(exc),
            )  # fmt: skip


def _failed(outcome: Outcome, reason: str) -> Outcome:
    """The outcome of a failed verification: its reason, even when the state did not move
    (a disabled destination stays disabled but the user still learns why it failed)."""
    return Outcome(
        outcome.flow_id, outcome.destination, outcome.name, outcome.state, reason,
        changed=outcome.changed, verification_failed=True,
    )  # fmt: skip


def verify_flow(
    lifecycle: Lifecycle, flow: Flow, keys: Sequence[str] | None = None, *, by: str
) -> list[Outcome]:
    """Verify and record the flow's enabled destinations (or those named), concurrently:
    one unreachable store costs its own timeout, not everyone's."""
    chosen = [find_destination(flow, key) for key in keys] if keys else flow.destinations
    enabled = [d for d in chosen if d.enabled]
    if not enabled:
        return []
    with ThreadPoolExecutor(min(8, len(enabled)), thread_name_prefix="verify") as pool:
        return list(pool.map(lambda d: lifecycle.verify(flow, d, by=by), enabled))


def find_destination(flow: Flow, key: str) -> Destination:
    """The flow's destination with this key; ``LifecycleError`` listing the keys if none."""
    for destination in flow.destinations:
        if destination.key == key:
            return destination
    known = ", ".join(d.key for d in flow.destinations) or "none"
    raise LifecycleError(f"flow {flow.id} has no destination {key!r} (its destinations: {known})")
