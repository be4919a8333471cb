"""Re-reading the flow registry returns once it reaches the end of the topic, every time.

librdkafka's partition-EOF event fires once per arrival at the end: a refresh that
waited for it on an up-to-date registry ran out its whole timeout, which made every
intake to an unknown flow answer its 404 after 5 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from engine.runtime.flow_catalog import FlowCatalog
from engine.runtime.registry import FlowRegistry, apply_flow, delete_flow
from engine.settings import Settings
from tests.factories import make_flow
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

# Long, so a refresh that stopped at its timeout rather than at the end of the topic
# is told apart by ``caught_up`` (never by a clock).
TIMEOUT_S = 30.0


@pytest.fixture
def registry(stack: Settings, unique_id: str) -> Iterator[FlowRegistry]:
    registry = FlowRegistry(stack)
    yield registry
    registry.close()
    delete_flow(stack, unique_id)


def test_every_refresh_returns_at_the_end_of_the_topic_not_at_its_timeout(
    stack: Settings, unique_id: str, registry: FlowRegistry
) -> None:
    apply_flow(stack, make_flow(unique_id, "http://127.0.0.1:9/leads"))

    registry.refresh(TIMEOUT_S)
    assert registry.caught_up
    assert registry.get(unique_id) is not None

    registry.refresh(TIMEOUT_S)  # nothing new for this registry: the end is where it is
    assert registry.caught_up

    delete_flow(stack, unique_id)  # something new after it reached the end
    # The relay's Kafka commit returns once the coordinator has the commit; the markers reach
    # the partition just after, and only then does a read_committed reader see the tombstone
    # (once in a CI run, the first refresh was that early). Each refresh still ends at the
    # end of the topic: one that waited out its 30 s would overrun this wait.
    changed = wait_until(
        lambda: registry.refresh(TIMEOUT_S),
        10,
        "a refresh to read the tombstone",
        every=0.05,
    )
    assert changed is True
    assert registry.caught_up
    assert registry.get(unique_id) is None


def test_intake_catalogue_answers_unknown_flows_from_a_registry_read_to_its_end(
    stack: Settings, unique_id: str
) -> None:
    catalog = FlowCatalog(stack, min_interval=0.0)  # every unknown id re-reads the registry

    async def ask_twice() -> list[object]:
        found = []
        for _ in range(2):
            found.append(await catalog.get(f"{unique_id}-nosuch"))
            found.append(catalog.up_to_date)
        return found

    try:
        assert asyncio.run(ask_twice()) == [None, True, None, True]
    finally:
        catalog.close()
