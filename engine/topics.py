"""Topic names of a flow, and creating them.

    leadflow.<flow>.intake           raw leads (JSON), published by producers
    leadflow.<flow>.events.<step>    Avro events recorded by <step>; the next step's input
    leadflow.<flow>.retry.<step>     hand-offs waiting for another attempt at <step>
    leadflow.<flow>.dlq              poison messages and exhausted retries, the cause in headers

Events of one lead are keyed by its lead id, so they keep their order.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.flows import Flow

PREFIX = "leadflow"
EVENTS_PATTERN = r"^leadflow\..+\.events\..+$"

# Message headers the engine sets on event records.
HANDOFF_HEADER = "leadflow-handoff"  # present on the one record the next step must process
TYPE_HEADER = "leadflow-type"
ATTEMPT_HEADER = "leadflow-attempt"  # on retry records: which attempt this one is (2, 3, ...)
DUE_HEADER = "leadflow-due-ms"  # on retry records: not to be processed before this epoch ms
ERROR_HEADER = "leadflow-error"

RETRYING_KINDS = ("recipient", "enhancement")


def intake_topic(flow_id: str) -> str:
    return f"{PREFIX}.{flow_id}.intake"


def events_topic(flow_id: str, step_id: str) -> str:
    return f"{PREFIX}.{flow_id}.events.{step_id}"


def dlq_topic(flow_id: str) -> str:
    return f"{PREFIX}.{flow_id}.dlq"


def retry_topic(flow_id: str, step_id: str) -> str:
    return f"{PREFIX}.{flow_id}.retry.{step_id}"


def flow_event_topics(flow: Flow) -> list[str]:
    """Every topic holding the flow's lead events: one per step, and feedback."""
    return [events_topic(flow.id, s.id) for s in flow.steps] + [events_topic(flow.id, "feedback")]


def flow_topics(flow: Flow) -> list[str]:
    return (
        [intake_topic(flow.id), dlq_topic(flow.id)]
        + [events_topic(flow.id, s.id) for s in flow.steps]
        + [retry_topic(flow.id, s.id) for s in flow.steps if s.kind in RETRYING_KINDS]
        + [events_topic(flow.id, "feedback")]  # feedback.received / feedback.processed
    )


def input_topic(flow: Flow, step_id: str) -> str:
    index = flow.index(step_id)
    return intake_topic(flow.id) if index == 0 else events_topic(flow.id, flow.steps[index - 1].id)


def ensure_topics(admin: AdminClient, flow: Flow, timeout: float = 30.0) -> list[str]:
    """Create the flow's topics that do not exist yet; returns the ones created."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in flow_topics(flow) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                t, num_partitions=flow.topics.partitions, replication_factor=flow.topics.replication
            )
            for t in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent worker won the race
                raise
    wait_for_leaders(admin, wanted, timeout)
    return created


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float = 30.0) -> None:
    """Return once every partition of ``topics`` has a leader in the cluster's metadata.

    ``create_topics`` returns when the controller has the topic, which can be before
    any broker leads its partitions; offset lookups (replay, lag, watermarks) fail
    with NOT_LEADER_FOR_PARTITION until then, so a flow's topics are ready only now.
    """
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        pending = [
            t
            for t in topics
            if t not in metadata.topics
            or metadata.topics[t].error is not None
            or not metadata.topics[t].partitions
            or any(p.leader < 0 for p in metadata.topics[t].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no leader after {timeout:.0f}s for partitions of {pending}")
        time.sleep(0.1)
