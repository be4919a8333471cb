"""Topics created by the kit on the real broker: with their configs, led on return."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from confluent_kafka.admin._listoffsets import OffsetSpec

from engine.runtime.kafka.topics import TopicSpec, ensure_topics

LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]

pytestmark = pytest.mark.stack


def test_topics_are_created_with_their_configs_and_led_on_return(
    admin: AdminClient, unique_id: str
) -> None:
    plain, compacted = f"leadflow.{unique_id}.kit.plain", f"leadflow.{unique_id}.kit.table"
    specs = [TopicSpec(plain, 3, 1), TopicSpec(compacted, 1, 1, {"cleanup.policy": "compact"})]

    assert ensure_topics(admin, specs) == [plain, compacted]

    # Every partition answers an offset request at once (one request, not retried as the
    # kit's list_offsets would): each has a leader.
    parts = [(plain, 0), (plain, 1), (plain, 2), (compacted, 0)]
    futures = admin.list_offsets({TopicPartition(t, p): LATEST for t, p in parts})
    assert {
        (tp.topic, tp.partition): f.result().offset for tp, f in futures.items()
    } == dict.fromkeys(parts, 0)
    resource = ConfigResource(ResourceType.TOPIC, compacted)
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"
    assert ensure_topics(admin, specs) == []  # there already: nothing created
