"""Flows as data: applied definitions live on a compacted topic, and workers follow it.

``leadflow flow apply FILE`` validates the definition, creates the flow's
topics, and records a ``flow.created`` or ``flow.updated`` event; ``leadflow flow
delete`` a ``flow.deleted``. Each is a row of the system events outbox
(``engine.state.outbox``), which the relay (``engine.runtime.outbox_relay``) publishes
in one Kafka transaction to ``leadflow.flows`` keyed by flow id (the definition, or a
tombstone) and to the uncompacted ``leadflow.system-events`` (the full history, which
compaction takes from the registry). Compaction keeps the latest definition of every flow
forever, so any process rebuilds the whole registry by reading the topic from the
beginning; Postgres and ``leadflow.system-events`` keep every version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import AdminClient

from engine.errors import LeadflowError
from engine.flows import Flow
from engine.retention import topic_retention
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.topics import ensure_flow_topics, ensure_topics, set_retention
from engine.runtime.outbox_relay import FLOWS_TOPIC, OutboxRelay, flow_checksum, flows_topic_spec
from engine.runtime.schema_registry import register_topics
from engine.settings import Settings
from engine.state.outbox import record_system_event
from engine.state.postgres import connect, migrate_state
from engine.topics import flow_event_topics

log = structlog.get_logger(__name__)

__all__ = ["FLOWS_TOPIC", "ApplyResult", "FlowRegistry", "apply_flow", "delete_flow", "read_flows"]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    type: Literal["flow.created", "flow.updated", "flow.unchanged"]
    flow: Flow
    created_topics: list[str]


def checksum(flow: Flow) -> str:
    """Identity of a definition's content, its version number aside."""
    return flow_checksum(flow.model_dump(mode="json"))


def shared_topics(settings: Settings) -> list[str]:
    """The topics every flow writes to (buyer feedback and its rejects): they keep the
    longest retention of the flows. The compacted registry is not one of them."""
    return [settings.feedback_topic, f"{settings.feedback_topic}.rejected"]


def ensure_flows_topic(admin: AdminClient, replication: int = 1) -> None:
    ensure_topics(admin, [flows_topic_spec(replication)], timeout=10.0)


class RegistryUnreadError(LeadflowError):
    """The registry topic could not be read to its end, so "no such flow" cannot be said."""


class UnknownFlowError(LeadflowError):
    """No applied flow has this id."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(f"no applied flow {flow_id} (leadflow flow list shows them)")


class FlowRegistry:
    """The latest applied definition of every flow, read from the compacted topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._flows: dict[str, Flow] = {}
        self._reader: TopicReader | None = None
        # Whether the last refresh read to the end of the topic (as it stood when the
        # refresh began), rather than stopping at its timeout with part of it.
        self.caught_up = False

    def _open(self) -> TopicReader:
        if self._reader is None:
            ensure_flows_topic(new_admin(self.settings))
            self._reader = TopicReader(self.settings, [(FLOWS_TOPIC, 0)], "registry")
        return self._reader

    def refresh(self, timeout: float = 10.0) -> bool:
        """Read what was applied since the last refresh; True if any flow changed.

        Returns once the position reaches the end the topic had when the refresh
        began (``caught_up``), or after ``timeout`` with what it read (the kit's
        ``TopicReader``, which asks for the end every time rather than waiting for a
        partition-EOF event that fires only once per arrival at the end).
        """
        reader = self._open()
        self.caught_up = False
        try:
            records, self.caught_up = reader.read_to_end(timeout)
        except KafkaException as exc:
            # Kafka is away: keep the flows read before (workers go on with them).
            log.warning("flow registry not refreshed", error=str(exc.args[0]))
            return False
        if not self.caught_up:
            log.warning("flow registry read timed out", read=len(records))
        return self.apply(records)

    def apply(self, records: Sequence[Message]) -> bool:
        """Take in records of the registry topic, in order; True if any flow changed."""
        changed = False
        for msg in records:
            if msg.value() is None:  # a tombstone: the flow was deleted
                changed |= self._flows.pop((msg.key() or b"").decode(), None) is not None
                continue
            try:
                flow = Flow.model_validate(orjson.loads(msg.value() or b"{}")["definition"])
            except (ValueError, KeyError, TypeError) as exc:
                # Not written by `flow apply` (which validates): skipped, saying where it
                # is. Raising would end every worker that reads the registry, and again
                # at each restart, and hide the flows recorded after it.
                log.error(
                    "flow registry record unreadable, skipped", offset=msg.offset(), error=str(exc)
                )
                continue
            if self._flows.get(flow.id) != flow:
                self._flows[flow.id] = flow
                changed = True
        return changed

    def get(self, flow_id: str) -> Flow | None:
        return self._flows.get(flow_id)

    def flows(self) -> list[Flow]:
        return sorted(self._flows.values(), key=lambda f: f.id)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def read_flows(settings: Settings, timeout: float = 10.0) -> list[Flow]:
    """Every applied flow, read to the end of the registry, or ``RegistryUnreadError``: a
    command that answers "no such flow" or picks a version must have seen them all."""
    registry = FlowRegistry(settings)
    try:
        registry.refresh(timeout)
        if not registry.caught_up:
            raise RegistryUnreadError(
                f"the flow registry ({FLOWS_TOPIC}) could not be read to its end in {timeout:g} s"
            )
        return registry.flows()
    finally:
        registry.close()


def apply_flow(settings: Settings, flow: Flow, *, reason: str | None = None) -> ApplyResult:
    """Record ``flow`` as the current definition; the version goes up when content changes.

    ``reason``: why, when it is not an operator's ``flow apply`` (an alert's automated
    response), recorded on the ``flow.updated`` event."""
    flows = read_flows(settings)
    current = next((f for f in flows if f.id == flow.id), None)
    admin = new_admin(settings)
    if current is not None and checksum(current) == checksum(flow):
        # Topics made before retention was a setting get it on the next apply, changed or not.
        _set_topic_retention(settings, admin, flows, current)
        return ApplyResult("flow.unchanged", current, [])
    if current is not None and flow.version <= current.version:
        flow = flow.model_copy(update={"version": current.version + 1})
    created = ensure_flow_topics(admin, flow)
    _set_topic_retention(settings, admin, flows, flow)
    # Registry mode: the event schema under every event topic's subject before the flow is
    # recorded, so a schema the registry refuses fails here, naming the field.
    register_topics(settings, flow_event_topics(flow))
    kind: Literal["flow.created", "flow.updated"] = (
        "flow.created" if current is None else "flow.updated"
    )
    _record_and_publish(settings, kind, flow.id, flow.model_dump(mode="json"), reason=reason)
    return ApplyResult(kind, flow, created)


def _set_topic_retention(
    settings: Settings, admin: AdminClient, flows: Sequence[Flow], flow: Flow
) -> None:
    """``retention.ms`` of ``flow``'s topics, and of the shared ones (the longest of every
    flow with ``flow`` as it is now), where they differ from what the topics have."""
    others = [f for f in flows if f.id != flow.id]
    changed = set_retention(admin, topic_retention([*others, flow], shared_topics(settings)))
    if changed:
        log.info("topic retention set", flow_id=flow.id, topics=changed)


def delete_flow(settings: Settings, flow_id: str, *, must_exist: bool = False) -> None:
    """Remove a flow from the registry (a tombstone) and record ``flow.deleted`` with its
    last definition; its workers stop, its topics stay.

    A flow that is not applied is left alone (no event: nothing was deleted), or with
    ``must_exist`` is an ``UnknownFlowError`` (an operator's typo)."""
    current = next((f for f in read_flows(settings) if f.id == flow_id), None)
    if current is None:
        if must_exist:
            raise UnknownFlowError(flow_id)
        return
    _record_and_publish(settings, "flow.deleted", flow_id, current.model_dump(mode="json"))


def _record_and_publish(
    settings: Settings,
    kind: str,
    flow_id: str,
    definition: dict[str, Any],
    *,
    reason: str | None = None,
) -> None:
    """The change as a pending system event, then published at once (the registry record and
    the history event in one Kafka transaction, ``engine.runtime.outbox_relay``).

    The row is the change: if Kafka fails now, it stays pending and the relay role records
    it later, never half. ``OutboxUnpublishedError`` says so to the command."""
    migrate_state(settings)
    with connect(settings, statement_timeout_ms=5_000) as conn, conn.transaction():
        record_system_event(
            conn,
            kind,
            subject=f"flows/{flow_id}",
            data=definition,
            flow_id=flow_id,
            reason=reason,
        )
    OutboxRelay(settings, timeout=30.0).publish_pending()
