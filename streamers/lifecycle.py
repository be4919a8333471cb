"""A destination's lifecycle: verified and activated, deactivated by failures, disabled and
enabled by its user; each change recorded as an ``event_destination.*`` event.

The current state lives in Postgres (``streamers.destination_state``), which
every streamer reads to decide whether to write. Each change and its event are written
in one Postgres transaction (the event as a row of the system events outbox,
``engine.state.outbox``), so a committed change always has its event. The relay
(``engine.runtime.outbox_relay``) publishes it, right after the commit and, if Kafka
fails then, later from the ``relay`` role: on ``leadflow.system-events`` and, as always,
as JSON on ``leadflow.destinations`` keyed by ``FLOW/DESTINATION``::

    {"id": "01K...", "type": "event_destination.deactivated", "flow_id": "demo",
     "destination": "s3-leadflow-events-demo", "reason": "...", "at": "2026-...Z",
     "data": {"flow_id": "demo", "key": "s3-leadflow-events-demo", "state": "deactivated",
              "kind": "s3", "bucket": "leadflow-events", ...}}

``data`` is the destination as it was at the event: its settings (credentials by
reference only, as the flow names them) and its new state.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

import orjson
import structlog

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.flows import Flow
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.runtime.outbox_relay import DESTINATIONS_TOPIC, OutboxRelay
from engine.settings import Settings
from engine.state.outbox import record_system_event
from engine.state.postgres import migrate_state
from streamers.destination_state import (
    DestinationState,
    State,
    open_state,
    read_state,
    transition,
)
from streamers.verification import StoreOpener, verify_destination

log = structlog.get_logger(__name__)

__all__ = ["DESTINATIONS_TOPIC", "DestinationEvent", "Lifecycle", "read_events", "verify_flow"]
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
    data: dict[str, Any] = field(default_factory=dict)  # {}: a record from before data

    @staticmethod
    def from_json(value: bytes) -> DestinationEvent:
        body = orjson.loads(value)
        return DestinationEvent(**{f.name: body[f.name] for f in fields(DestinationEvent)
                                   if f.name in body})  # fmt: skip


def destination_data(
    flow_id: str, destination: Destination, state: State, reason: str
) -> dict[str, Any]:
    """The resource object of an ``event_destination.*`` event: the destination's settings
    as the flow gives them (credentials are references, never secrets) and its new state."""
    return {
        "flow_id": flow_id,
        "key": destination.key,
        "name": destination.name,
        **destination.model_dump(mode="json"),
        "state": state,
        "reason": reason,
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a lifecycle call did to one destination."""

    flow_id: str
    destination: str
    name: str
    state: State | None  # after the call; None: never recorded
    reason: str | None  # why it is in that state, or why the call changed nothing
    changed: bool  # the state changed (and an event was recorded)
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
    events = [DestinationEvent.from_json(msg.value() or b"{}") for msg in records]
    return [e for e in events if flow_id is None or e.flow_id == flow_id]


class Lifecycle:
    """Changes destinations' states and records the events; one per process is enough.

    Every call opens its own short connection: lifecycle changes are rare
    (apply, a user's command, a deactivation), so nothing is held open.
    ``publish_timeout`` bounds the wait for Kafka after a change (the event stays pending
    for the relay role if Kafka does not answer in it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        opener: StoreOpener | None = None,
        publish_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self._opener = opener
        # Thread-safe: verify_flow verifies from several threads.
        self._relay = OutboxRelay(settings, timeout=publish_timeout)
        self._migrated = False

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
        self._relay.close()

    def _move(
        self,
        flow_id: str,
        destination: Destination,
        to: State,
        reason: str,
        allowed_from: frozenset[State | None],
    ) -> Outcome:
        key = destination.key
        if not self._migrated:  # the outbox is the engine state's (migration 006)
            migrate_state(self.settings)
            self._migrated = True
        with open_state(self.settings) as conn, conn.transaction():
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
                # In the change's transaction: the change commits with its event or not at all.
                record_system_event(
                    conn, ACTIVATED if to == "active" else DEACTIVATED,
                    subject=f"flows/{flow_id}/destinations/{key}",
                    data=destination_data(flow_id, destination, to, reason),
                    flow_id=flow_id, reason=reason,
                )  # fmt: skip
        if changed:
            self._publish()
            say = log.info if to == "active" else log.warning
            say("destination " + to, flow=flow_id, destination=key, reason=reason)
        return Outcome(flow_id, key, destination.name, to, reason, changed=changed)

    def _publish(self) -> None:
        """Publish the event just committed (and any other pending); if Kafka fails, the
        change stands and the event stays pending: the relay role publishes it later."""
        try:
            self._relay.publish_pending()
        except LeadflowError as exc:
            log.warning("lifecycle event pending: the relay publishes it later", error=str(exc))


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
