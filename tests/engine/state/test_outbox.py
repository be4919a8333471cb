"""The system events outbox in Postgres: an event exists exactly when its change committed,
and readers page published events in the order they went out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.settings import Settings
from engine.state.outbox import (
    UnknownSystemEventError,
    claim_pending,
    mark_published,
    published_events,
    record_system_event,
)
from engine.state.postgres import Connection, connect, migrate_state

pytestmark = pytest.mark.stack


@pytest.fixture
def conn(state_settings: Settings) -> Iterator[Connection]:
    migrate_state(state_settings)
    with connect(state_settings) as opened:
        yield opened


class Boom(Exception):
    pass


def _change_that_fails(conn: Connection) -> None:
    with conn.transaction():
        record_system_event(conn, "flow.created", subject="flows/a", data={"id": "a"})
        raise Boom  # the change failed after the event was written: neither stays


def test_an_event_is_recorded_only_with_the_transaction_that_records_it(conn: Connection) -> None:
    with pytest.raises(Boom):
        _change_that_fails(conn)
    with conn.transaction():
        kept = record_system_event(
            conn, "flow.created", subject="flows/b", data={"id": "b", "version": 1}, flow_id="b"
        )

    with conn.transaction():
        pending = claim_pending(conn, 10)
    assert [(e.id, e.type, e.flow_id, e.subject, e.data) for e in pending] == [
        (kept.id, "flow.created", "b", "flows/b", {"id": "b", "version": 1})
    ]
    assert published_events(conn) == []  # pending events are not listed


def test_published_events_page_in_publication_order_by_type_and_flow(conn: Connection) -> None:
    with conn.transaction():
        a = record_system_event(conn, "flow.created", subject="flows/a", data={}, flow_id="a")
        b = record_system_event(conn, "flow.created", subject="flows/b", data={}, flow_id="b")
        c = record_system_event(conn, "flow.deleted", subject="flows/a", data={}, flow_id="a")
        none = record_system_event(conn, "task_run.queued", subject="exports/1", data={})
    with conn.transaction():
        # Published out of id order (a later-id row went out first): readers follow the
        # publication, so a client paging by after_id misses neither.
        mark_published(conn, [b.id, a.id, c.id, none.id])

    every = [e.id for e in published_events(conn)]
    assert every == [b.id, a.id, c.id, none.id]
    assert [e.id for e in published_events(conn, after_id=b.id, limit=2)] == [a.id, c.id]
    assert [e.id for e in published_events(conn, after_id=none.id)] == []
    assert [e.id for e in published_events(conn, types=["flow.deleted"])] == [c.id]
    assert [e.id for e in published_events(conn, flows=frozenset({"a"}))] == [a.id, c.id]
    with pytest.raises(UnknownSystemEventError):
        published_events(conn, after_id="01KAAAAAAAAAAAAAAAAAAAAAAA")


def test_marking_twice_keeps_the_first_publication(conn: Connection) -> None:
    with conn.transaction():
        a = record_system_event(conn, "flow.created", subject="flows/a", data={})
        b = record_system_event(conn, "flow.created", subject="flows/b", data={})
    with conn.transaction():
        mark_published(conn, [a.id])
    with conn.transaction():
        mark_published(conn, [b.id, a.id])  # a relay's retry of a batch a went out in
    assert [e.id for e in published_events(conn)] == [a.id, b.id]
