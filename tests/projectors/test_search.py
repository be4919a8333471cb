"""Event search pages in the order events were stored, and never skips or repeats one.

Event ids sort by the lead's submission time, so an event that arrives late
for an early lead (feedback, a retried delivery, a slow partition) gets an id
*below* ids a client has already paged past. These tests write exactly that,
and a writer that stays open while others commit, and page through it all.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest

from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.search import EventQuery, UnknownCursorError, search_events
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

CODEC = EventCodec()
BASE_MS = 1_764_000_000_000
Events = list[dict[str, Any]]
_writes = count()


def store(conn: Connection, events: Events) -> None:
    # A projector name per write: two open writers of one checkpoint row would wait on each other.
    records = [Record("t", 0, i, CODEC.encode(e)) for i, e in enumerate(events)]
    write_batch(conn, f"test{next(_writes)}", build_batch(CODEC, records))


def wait_visible(conn: Connection) -> None:
    """Until every stored event is older than every transaction still running: only then
    does a page show it. Any session on the server with a write open holds that horizon back,
    other tests' bulk loads included, hence the generous wait."""

    def visible() -> bool:
        row = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM events"
            " WHERE xid >= pg_snapshot_xmin(pg_current_snapshot()))"
        ).fetchone()
        return bool(row and row[0])

    wait_until(visible, 180, "stored events to fall behind the visibility horizon")


def ids(events: Events) -> list[str]:
    return [e["id"] for e in events]


def page_after(conn: Connection, cursor: str | None, limit: int = 1000) -> list[str]:
    query = EventQuery(after_id=cursor, limit=limit, descending=False)
    return ids(search_events(conn, query))


@pytest.fixture
def writer(pg_settings: Settings) -> Iterator[Connection]:
    """A second session, for a write transaction that stays open while others commit."""
    with connect(pg_settings) as conn:
        yield conn


def test_an_event_stored_late_with_an_id_below_the_cursor_is_on_the_next_page_once(
    db: Connection,
) -> None:
    early, later = (make_lead_events("f", submitted_ms=BASE_MS + i * 1000) for i in range(2))
    late = early.pop()  # the early lead's flow.completed, held back
    store(db, early + later)
    wait_visible(db)
    first = page_after(db, None)
    assert first == ids(early + later)
    assert late["id"] < first[-1]  # paging by id would never show it

    store(db, [late])
    wait_visible(db)
    assert page_after(db, first[-1]) == [late["id"]]
    assert page_after(db, late["id"]) == []


def test_paging_in_small_pages_sees_every_event_once_while_late_events_arrive(
    db: Connection,
) -> None:
    leads = [make_lead_events("f", submitted_ms=BASE_MS + i * 1000) for i in range(4)]
    held_back = [timeline.pop() for timeline in leads]  # each lead's flow.completed
    store(db, [e for timeline in leads for e in timeline])
    wait_visible(db)
    seen: list[str] = []
    cursor: str | None = None
    for page_number in range(8):
        page = page_after(db, cursor, limit=4)
        seen += page
        cursor = page[-1] if page else cursor
        # Once the client is past a lead, that lead's last event arrives.
        if 1 <= page_number <= len(held_back):
            store(db, [held_back[page_number - 1]])
            wait_visible(db)
    everything = [e["id"] for timeline in leads for e in timeline] + ids(held_back)
    assert sorted(seen) == sorted(everything)
    assert len(seen) == len(set(seen))


def test_an_open_writer_holds_back_later_commits_until_it_commits_then_both_show_once(
    db: Connection, writer: Connection
) -> None:
    first, slow, fast = (make_lead_events("f", submitted_ms=BASE_MS + i * 1000) for i in range(3))
    store(db, first)
    wait_visible(db)
    cursor = page_after(db, None)[-1]

    with writer.transaction():
        store(writer, slow)  # written, not committed
        store(db, fast)  # written after, committed first
        assert page_after(db, cursor) == []
        # Showing `fast` now would move the client's cursor past `slow`'s position.
    wait_visible(db)
    assert page_after(db, cursor) == ids(slow) + ids(fast)


def test_descending_pages_go_back_in_storage_order_with_before_id(db: Connection) -> None:
    early, later = (make_lead_events("f", submitted_ms=BASE_MS + i * 1000) for i in range(2))
    store(db, later)
    store(db, early)
    wait_visible(db)
    newest_first = ids(search_events(db, EventQuery(limit=4)))
    assert newest_first == ids(early)[::-1][:4]
    back = search_events(db, EventQuery(before_id=newest_first[-1], limit=100))
    assert ids(back) == ids(early)[::-1][4:] + ids(later)[::-1]


def test_filters_combine_with_paging(db: Connection) -> None:
    mine = make_lead_events("f", submitted_ms=BASE_MS)
    other = make_lead_events("g", submitted_ms=BASE_MS + 1)
    store(db, mine + other)
    wait_visible(db)
    query = EventQuery(flow_id="f", step_id="premier", descending=False)
    assert ids(search_events(db, query)) == [e["id"] for e in mine if e["step_id"] == "premier"]
    delivered = EventQuery(types=("recipient.delivered",), outcome="success", descending=False)
    assert ids(search_events(db, delivered)) == [mine[3]["id"], other[3]["id"]]


def test_a_cursor_that_is_no_stored_event_is_refused(db: Connection) -> None:
    with pytest.raises(UnknownCursorError) as raised:
        search_events(db, EventQuery(before_id="01NOSUCHEVENT"))
    assert (raised.value.param, raised.value.event_id) == ("before_id", "01NOSUCHEVENT")


def _walk(conn: Connection, forwards: bool, descending: bool, limit: int) -> list[str]:
    """Page through everything the way a client does: forwards with after_id = the page's
    newest event, backwards with before_id = its oldest, in either sort order."""
    # From one end: the oldest event (then what follows it) or the newest (then before it).
    start = ids(search_events(conn, EventQuery(limit=1, descending=forwards is False)))
    seen, cursor = list(start), start[0]
    for _ in range(100):
        key = "after_id" if forwards else "before_id"
        query = EventQuery(limit=limit, descending=descending, **{key: cursor})  # type: ignore[arg-type]
        page = ids(search_events(conn, query))
        if not page:
            return seen
        # Within the page, newest is first when descending.
        newest, oldest = (page[0], page[-1]) if descending else (page[-1], page[0])
        seen += page
        cursor = newest if forwards else oldest
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("forwards", [True, False], ids=["after_id", "before_id"])
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_paging_either_way_in_either_sort_sees_every_event_once(
    db: Connection, forwards: bool, descending: bool
) -> None:
    """The issue's case: after_id under the default desc sort repeated the newest page."""
    leads = [make_lead_events("f", submitted_ms=BASE_MS + i * 1000) for i in range(5)]
    for timeline in leads:
        store(db, timeline)
    wait_visible(db)
    seen = _walk(db, forwards, descending, limit=3)
    everything = [e["id"] for timeline in leads for e in timeline]
    assert len(seen) == len(set(seen)) == len(everything)
    assert set(seen) == set(everything)


def test_a_page_is_ordered_by_sort_and_next_to_its_cursor(db: Connection) -> None:
    events = make_lead_events("f", submitted_ms=BASE_MS)
    store(db, events)
    wait_visible(db)
    every = ids(events)
    after = EventQuery(after_id=every[0], limit=2)
    assert ids(search_events(db, after)) == [every[2], every[1]]  # desc, right after the cursor
    before = EventQuery(before_id=every[4], limit=2, descending=False)
    assert ids(search_events(db, before)) == [every[2], every[3]]
    both = EventQuery(after_id=every[0], before_id=every[4], limit=2, descending=False)
    assert ids(search_events(db, both)) == [every[1], every[2]]
