"""Flows as data: applied definitions live on a compacted topic, and workers follow it.

``leadflow flow apply FILE`` validates the definition, creates the flow's
topics, and records a ``flow.created`` or ``flow.updated`` event on
``leadflow.flows`` keyed by flow id. Compaction keeps the latest definition
of every flow forever, so any process rebuilds the whole registry by reading
the topic from the beginning - no other store holds configuration.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from engine.errors import LeadflowError
from engine.flows import Flow
from engine.retention import topic_retention
from engine.runtime.kafka.clients import new_admin, new_producer
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.topics import TopicSpec, ensure_flow_topics, ensure_topics, set_retention
from engine.runtime.schema_registry import register_topics
from engine.settings import Settings
from engine.topics import flow_event_topics

log = structlog.get_logger(__name__)

FLOWS_TOPIC = "leadflow.flows"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    type: Literal["flow.created", "flow.updated", "flow.unchanged"]
    flow: Flow
    created_topics: list[str]


def checksum(flow: Flow) -> str:
    """Identity of a definition's content, its version number aside."""
    body = flow.model_dump(mode="json", exclude={"version"})
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def shared_topics(settings: Settings) -> list[str]:
    """The topics every flow writes to (buyer feedback and its rejects): they keep the
    longest retention of the flows. The compacted registry is not one of them."""
    return [settings.feedback_topic, f"{settings.feedback_topic}.rejected"]


def ensure_flows_topic(admin: AdminClient, replication: int = 1) -> None:
    topic = TopicSpec(
        FLOWS_TOPIC,
        1,  # one partition: one total order of configuration changes
        replication,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    )
    ensure_topics(admin, [topic], timeout=10.0)


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
    event: dict[str, Any] = {
        "type": "flow.created" if current is None else "flow.updated",
        "flow_id": flow.id,
        "version": flow.version,
        "checksum": checksum(flow),
        "timestamp": int(time.time() * 1000),
        "definition": flow.model_dump(mode="json"),
    }
    if reason is not None:
        event["reason"] = reason
    producer = new_producer(settings)
    producer.produce(FLOWS_TOPIC, orjson.dumps(event), flow.id.encode())
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "flow not recorded"))
    return ApplyResult(event["type"], flow, created)


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
    """Remove a flow from the registry (a tombstone); its workers stop, its topics stay.

    ``must_exist``: raise ``UnknownFlowError`` for a flow that is not applied (an
    operator's typo) rather than record a tombstone that removes nothing."""
    if must_exist and all(f.id != flow_id for f in read_flows(settings)):
        raise UnknownFlowError(flow_id)
    producer = new_producer(settings)
    producer.produce(FLOWS_TOPIC, None, flow_id.encode())
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "tombstone not recorded"))
