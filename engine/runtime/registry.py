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
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic, TopicPartition

from engine.errors import LeadflowError
from engine.flows import Flow
from engine.runtime.kafka.config import admin_config, consumer_config, producer_config
from engine.settings import Settings
from engine.topics import ensure_topics

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


def ensure_flows_topic(admin: AdminClient, replication: int = 1) -> None:
    if FLOWS_TOPIC in admin.list_topics(timeout=10).topics:
        return
    topic = NewTopic(
        FLOWS_TOPIC,
        num_partitions=1,  # one partition: one total order of configuration changes
        replication_factor=replication,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    )
    try:
        admin.create_topics([topic])[FLOWS_TOPIC].result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


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
        self._consumer: Consumer | None = None
        # Whether the last refresh read to the end of the topic (as it stood when the
        # refresh began), rather than stopping at its timeout with part of it.
        self.caught_up = False

    def _open(self) -> Consumer:
        if self._consumer is None:
            ensure_flows_topic(AdminClient(admin_config(self.settings)))
            # A throwaway group: every reader wants the whole topic, never a share of it.
            group = f"leadflow.registry.{uuid.uuid4().hex}"
            consumer = Consumer(consumer_config(self.settings, group))
            consumer.assign([TopicPartition(FLOWS_TOPIC, 0, OFFSET_BEGINNING)])
            self._consumer = consumer
        return self._consumer

    def refresh(self, timeout: float = 10.0) -> bool:
        """Read what was applied since the last refresh; True if any flow changed.

        Returns once the position reaches the end the topic had when the refresh
        began (``caught_up``), or after ``timeout`` with what it read. The end is
        asked for every time: librdkafka's partition-EOF event fires once per
        arrival at the end, so a refresh that waited for it on an up-to-date
        registry waited out its whole timeout (5 s per intake to an unknown flow,
        0.5 s of every step's registry watch).
        """
        consumer = self._open()
        self.caught_up = False
        deadline = time.monotonic() + timeout
        partition = TopicPartition(FLOWS_TOPIC, 0)
        try:
            low, end = consumer.get_watermark_offsets(partition, timeout=timeout, cached=False)
        except KafkaException as exc:
            # Kafka is away: keep the flows read before (workers go on with them).
            log.warning("flow registry not refreshed", error=str(exc.args[0]))
            return False
        changed = False
        while True:
            position = consumer.position([partition])[0].offset
            if end <= low or position >= end:
                self.caught_up = True
                return changed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("flow registry read timed out", position=position, end=end)
                return changed
            msg = consumer.poll(min(0.2, remaining))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                raise KafkaException(err)
            if msg.value() is None:  # a tombstone: the flow was deleted
                changed |= self._flows.pop((msg.key() or b"").decode(), None) is not None
                continue
            flow = Flow.model_validate(orjson.loads(msg.value() or b"{}")["definition"])
            if self._flows.get(flow.id) != flow:
                self._flows[flow.id] = flow
                changed = True

    def get(self, flow_id: str) -> Flow | None:
        return self._flows.get(flow_id)

    def flows(self) -> list[Flow]:
        return sorted(self._flows.values(), key=lambda f: f.id)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


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


def apply_flow(settings: Settings, flow: Flow) -> ApplyResult:
    """Record ``flow`` as the current definition; the version goes up when content changes."""
    current = next((f for f in read_flows(settings) if f.id == flow.id), None)
    if current is not None and checksum(current) == checksum(flow):
        return ApplyResult("flow.unchanged", current, [])
    if current is not None and flow.version <= current.version:
        flow = flow.model_copy(update={"version": current.version + 1})
    created = ensure_topics(AdminClient(admin_config(settings)), flow)
    event: dict[str, Any] = {
        "type": "flow.created" if current is None else "flow.updated",
        "flow_id": flow.id,
        "version": flow.version,
        "checksum": checksum(flow),
        "timestamp": int(time.time() * 1000),
        "definition": flow.model_dump(mode="json"),
    }
    producer = Producer(producer_config(settings))
    producer.produce(FLOWS_TOPIC, orjson.dumps(event), flow.id.encode())
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "flow not recorded"))
    return ApplyResult(event["type"], flow, created)


def delete_flow(settings: Settings, flow_id: str, *, must_exist: bool = False) -> None:
    """Remove a flow from the registry (a tombstone); its workers stop, its topics stay.

    ``must_exist``: raise ``UnknownFlowError`` for a flow that is not applied (an
    operator's typo) rather than record a tombstone that removes nothing."""
    if must_exist and all(f.id != flow_id for f in read_flows(settings)):
        raise UnknownFlowError(flow_id)
    producer = Producer(producer_config(settings))
    producer.produce(FLOWS_TOPIC, None, flow_id.encode())
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "tombstone not recorded"))
