"""Topic names of a flow (creating them is the Kafka kit's: ``engine.runtime.kafka.topics``).

    leadflow.<flow>.intake           raw leads (JSON), published by producers
    leadflow.<flow>.events.<step>    Avro events recorded by <step>; the next step's input
    leadflow.<flow>.retry.<step>     hand-offs waiting for another attempt at <step>
    leadflow.<flow>.dlq              poison messages and exhausted retries, the cause in headers

Events of one lead are keyed by its lead id, so they keep their order.
"""

from __future__ import annotations

from engine.flows import Flow

PREFIX = "leadflow"
EVENTS_PATTERN = r"^leadflow\..+\.events\..+$"

# Message headers the engine sets on event records.
HANDOFF_HEADER = "leadflow-handoff"  # present on the one record the next step must process
TYPE_HEADER = "leadflow-type"
# On every event: "registry" (Confluent wire format) or "single-object" (Avro's own
# framing), so a tool reading a topic can tell which deserializer to use before decoding.
ENCODING_HEADER = "leadflow-encoding"
ATTEMPT_HEADER = "leadflow-attempt"  # on retry records: which attempt this one is (2, 3, ...)
DUE_HEADER = "leadflow-due-ms"  # on retry records: not to be processed before this epoch ms
RETRY_CAUSE_HEADER = "leadflow-retry-cause"  # on retry records: the failure retried (UTF-8)
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
