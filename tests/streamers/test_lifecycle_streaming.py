"""The real streaming loop with the real observer: a destination deactivated by failed
writes pauses (keeping its position) and, once re-enabled, delivers every event."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import IO, Any

import pytest

from engine.destinations import Deactivation
from engine.objects.contract import ObjectStore, PutResult
from engine.objects.errors import DestinationError
from engine.settings import Settings
from streamers.destination_observer import DestinationObserver
from streamers.lifecycle import ACTIVATED, DEACTIVATED, Lifecycle, read_events
from streamers.streamer import Streamer, consumer_group_id
from tests.streamers.support import (
    all_committed,
    create_topics,
    event_keys,
    expected_objects,
    make_events,
    offsets,
    produce_events,
    streaming_flow,
    wait_until,
)

pytestmark = pytest.mark.stack


class OutageStore:
    """The real store, refusing every write while ``down`` is set (a storage outage); the
    keys it refused are kept (``refused()``): they are the rounds the streamer had in flight."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.down = threading.Event()
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def refused(self) -> set[str]:
        with self._lock:  # the streamer's writer threads add to it
            return set(self._refused)

    def _refuse(self, key: str) -> None:
        with self._lock:
            self._refused.add(key)
        raise DestinationError(self.store.name, "ServiceUnavailable (HTTP 503) on PutObject")

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        if self.down.is_set():
            self._refuse(key)
        return self.store.put_if_absent(key, body, content_type, metadata)

    def put_file_if_absent(
        self, key: str, file: IO[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> PutResult:
        if self.down.is_set():
            self._refuse(key)
        return self.store.put_file_if_absent(key, file, content_type, metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def lifecycle(stack: Settings, unique_id: str) -> Iterator[Lifecycle]:
    opened = Lifecycle(stack.model_copy(update={"db_schema": unique_id}))
    yield opened
    opened.close()


def test_deactivated_by_failures_then_re_enabled_loses_nothing(
    stack: Settings, unique_id: str, lifecycle: Lifecycle, stores: dict[str, ObjectStore]
) -> None:
    settings = lifecycle.settings
    flow = streaming_flow(settings, unique_id, prefix=unique_id)
    policy = Deactivation(after_failures=3, after_seconds=1)
    destination = flow.destinations[0].model_copy(update={"deactivation": policy})
    flow = flow.model_copy(update={"destinations": [destination]})
    topics = create_topics(settings, flow)
    assert lifecycle.verify(flow, destination, by="flow apply").state == "active"
    store = OutageStore(stores["s3"])
    observer = DestinationObserver(
        lifecycle, flow.id, destination, refresh_s=0.3, activity_every_s=0.2
    )
    streamer = Streamer(settings, flow, destination, store=store, observer=observer, threads=4)
    stop = threading.Event()
    before, during = make_events(flow.id, 2), make_events(flow.id, 3)
    store.down.set()
    produce_events(settings, flow.id, before)
    runner = threading.Thread(target=streamer.run, args=(stop,))
    runner.start()
    try:

        def deactivated() -> bool:
            state = lifecycle.state(flow.id, destination.key)
            return state is not None and state.state == "deactivated"

        wait_until(deactivated, 30, "deactivation after failed writes")
        # The rounds in flight are what the streamer had fetched when writes began to fail
        # (no new round starts after a failure): all of ``before``, or only the partitions
        # it was reading first. Every one of their writes was tried, and refused.
        in_flight = store.refused()
        assert in_flight and in_flight <= set(expected_objects(unique_id, before))
        store.down.clear()  # storage is back, but the destination stays deactivated

        def in_flight_committed() -> bool:
            # Fresh topics: a group that has committed exactly the in-flight records has
            # committed offsets summing to their count.
            group = consumer_group_id(flow.id, destination)
            committed: dict[Any, int] = offsets(settings, flow, topics)[group]
            return sum(committed.values()) == len(in_flight)

        wait_until(in_flight_committed, 30, "the in-flight rounds written and committed")
        produce_events(settings, flow.id, during)
        wait_until(lambda: not all_committed(settings, flow, topics), 10, "new events")
        stop.wait(3)  # deactivated: the loop holds its position and writes nothing new
        assert set(event_keys(store, unique_id)) == in_flight
        assert in_flight_committed()

        assert lifecycle.enable(flow, destination).state == "active"
        wait_until(lambda: all_committed(settings, flow, topics), 30, "every event after enable")
    finally:
        stop.set()
        runner.join(30)
        observer.close()
    wanted = expected_objects(unique_id, before + during)
    assert sorted(event_keys(store, unique_id)) == sorted(wanted)
    types = [e.type for e in read_events(settings, flow.id)]
    assert types == [ACTIVATED, DEACTIVATED, ACTIVATED]
