"""The batch write and the queries on real Postgres: idempotent, atomic, leads only move forward."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projectors.batch import Batch, Record, build_batch
from projectors.queries import (
    completed_count,
    count_completed,
    event_counts,
    event_counts_for_leads,
    get_event,
    lead_timeline,
)
from projectors.store import Connection
from projectors.writing import load_checkpoints, write_batch
from schemas.codec import EventCodec, event_to_json_dict
from tests.factories import make_lead_events

pytestmark = pytest.mark.stack

CODEC = EventCodec()
TOPIC = "leadflow.f.events.source"
SUBMITTED_MS = 1_764_000_000_000


def batch_of(events: list[dict[str, Any]], first_offset: int = 0, partition: int = 0) -> Batch:
    records = [
        Record(TOPIC, partition, first_offset + i, CODEC.encode(e), e["lead_id"].encode())
        for i, e in enumerate(events)
    ]
    return build_batch(CODEC, records)


def count(conn: Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - test constants
    assert row is not None
    return int(row[0])


def lead_row(conn: Connection, lead_id: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM leads WHERE lead_id = %s", (lead_id,))
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def as_stored(event: dict[str, Any]) -> dict[str, Any]:
    """What the projection keeps of an event: its JSON after an Avro round trip."""
    parsed: dict[str, Any] = orjson.loads(
        orjson.dumps(event_to_json_dict(CODEC.decode(CODEC.encode(event))))
    )
    return parsed


def test_writing_the_same_batch_twice_keeps_one_row_per_event(db: Connection) -> None:
    events = make_lead_events(flow_id="f")
    batch = batch_of(events)

    assert write_batch(db, "timeline", batch) == 5
    assert write_batch(db, "timeline", batch) == 0

    assert count(db, "events") == 5
    assert count(db, "leads") == 1
    assert load_checkpoints(db, "timeline", [TOPIC]) == {(TOPIC, 0): 5}


def test_a_lead_row_reflects_its_latest_event_with_totals_once_completed(db: Connection) -> None:
    events = make_lead_events(flow_id="f", submitted_ms=SUBMITTED_MS)
    write_batch(db, "timeline", batch_of(events))

    lead = lead_row(db, events[0]["lead_id"])

    assert lead["flow_id"] == "f"
    assert lead["status"] == "success"
    assert lead["last_event_id"] == events[-1]["id"]
    assert lead["last_event_type"] == "flow.completed"
    assert lead["last_step_id"] == "premier"
    assert (lead["cost"], lead["revenue"]) == (2.5, 30.0)
    assert lead["completed"] is True
    assert lead["submitted_at"] == datetime.fromtimestamp(SUBMITTED_MS / 1000, UTC)
    assert lead["updated_at"] == datetime.fromtimestamp(events[-1]["timestamp"] / 1000, UTC)


def test_replaying_an_older_event_does_not_regress_the_lead(db: Connection) -> None:
    events = make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of(events))
    before = lead_row(db, events[0]["lead_id"])

    write_batch(db, "timeline", batch_of(events[:2], first_offset=0))

    assert lead_row(db, events[0]["lead_id"]) == before


def test_events_read_out_of_order_across_batches_leave_the_lead_at_its_newest_event(
    db: Connection,
) -> None:
    # The recipient's topic is read before the source's: flow.completed lands first.
    events = make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of(events[3:], first_offset=0, partition=1))
    write_batch(db, "timeline", batch_of(events[:3], first_offset=0, partition=0))

    lead = lead_row(db, events[0]["lead_id"])
    assert lead["last_event_type"] == "flow.completed"
    assert lead["completed"] is True
    assert (lead["cost"], lead["revenue"]) == (2.5, 30.0)
    assert [e["id"] for e in lead_timeline(db, events[0]["lead_id"])] == [e["id"] for e in events]


def test_a_lead_in_progress_shows_its_last_step_and_is_not_completed(db: Connection) -> None:
    events = make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of(events[:3]))

    lead = lead_row(db, events[0]["lead_id"])
    assert (lead["last_event_type"], lead["last_step_id"]) == ("filter.passed", "service-area")
    assert lead["cost"] == 2.5  # from source.accepted, the latest event that carried one
    assert lead["revenue"] is None
    assert lead["completed"] is False


def test_checkpoints_only_move_forward(db: Connection) -> None:
    events = make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of(events, first_offset=100))
    # A member that lost the partition in a rebalance commits its stale batch late.
    write_batch(db, "timeline", batch_of(events, first_offset=10))

    assert load_checkpoints(db, "timeline", [TOPIC]) == {(TOPIC, 0): 105}
    assert load_checkpoints(db, "other-projector", [TOPIC]) == {}


def test_an_undecodable_record_is_kept_with_its_bytes_once_however_often_it_is_replayed(
    db: Connection,
) -> None:
    batch = build_batch(CODEC, [Record(TOPIC, 2, 7, b"\x00garbage", b"k")])

    write_batch(db, "timeline", batch)
    write_batch(db, "timeline", batch)

    rows = db.execute(
        "SELECT kafka_topic, kafka_partition, kafka_offset, error, raw, key FROM projector_rejects"
    ).fetchall()
    assert rows == [
        # 0x00 opens the Confluent wire format: "garb" is read as the schema id.
        (TOPIC, 2, 7, "UnknownSchemaIdError: unknown schema id 1734439522 in a Confluent"
         " wire-format event", b"\x00garbage", b"k"),
    ]  # fmt: skip
    assert load_checkpoints(db, "timeline", [TOPIC]) == {(TOPIC, 2): 8}


def test_a_batch_that_fails_midway_writes_nothing_not_even_its_checkpoint(db: Connection) -> None:
    good = batch_of(make_lead_events(flow_id="f"))
    # build_batch rejects such a row; written anyway, the insert fails after the COPY.
    broken_row = (*good.events[1][:13], 2**40, *good.events[1][14:])  # ms overflows integer
    broken = Batch([*good.events[:1], broken_row], [], {(TOPIC, 0): 2})

    with pytest.raises(psycopg.DataError):
        write_batch(db, "timeline", broken)

    assert count(db, "events") == count(db, "leads") == 0
    assert load_checkpoints(db, "timeline", [TOPIC]) == {}


def test_a_timeline_is_the_leads_events_in_order_as_leadconduit_style_json(db: Connection) -> None:
    mine, other = make_lead_events(flow_id="f"), make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of([*reversed(mine), *other]))

    timeline = lead_timeline(db, mine[0]["lead_id"])

    assert timeline == [as_stored(e) for e in mine]
    assert [(e["type"], e["outcome"], e["reason"]) for e in timeline][-1] == (
        "flow.completed",
        "success",
        None,
    )
    assert lead_timeline(db, "no-such-lead") == []


def test_one_event_is_found_by_its_id(db: Connection) -> None:
    events = make_lead_events(flow_id="f")
    write_batch(db, "timeline", batch_of(events))

    assert get_event(db, events[2]["id"]) == as_stored(events[2])
    assert get_event(db, "0" * 26) is None


def test_counts_by_flow_and_by_leads(db: Connection) -> None:
    done = make_lead_events(flow_id="f")
    in_progress = make_lead_events(flow_id="f")[:2]
    elsewhere = make_lead_events(flow_id="g")
    write_batch(db, "timeline", batch_of([*done, *in_progress, *elsewhere]))

    assert event_counts(db, "f") == [
        ("filter.passed", "success", 1),
        ("flow.completed", "success", 1),
        ("recipient.delivered", "success", 1),
        ("source.accepted", "success", 2),
        ("source.submitted", "success", 2),
    ]
    assert count_completed(db, "f") == 1
    assert count_completed(db, "nothing") == 0
    ids = [done[0]["lead_id"], in_progress[0]["lead_id"]]
    assert completed_count(db, ids) == 1
    assert sum(n for _, _, n in event_counts_for_leads(db, ids)) == 7


def test_a_lead_with_nul_characters_keeps_every_event_in_its_timeline(db: Connection) -> None:
    events = make_lead_events(flow_id="f", submitted_ms=SUBMITTED_MS)
    for e in events:
        e["vars"] = {**e["vars"], "lead.first_name": "Ada\x00", "lead.email": "a\x00@b.co"}
    events[-1]["reason"] = "no\x00pe"

    write_batch(db, "test", batch_of(events))

    timeline = lead_timeline(db, events[0]["lead_id"])
    assert [e["id"] for e in timeline] == [e["id"] for e in events]
    assert timeline[-1]["vars"]["lead.first_name"] == "Ada\ufffd"
    assert timeline[-1]["reason"] == "no\ufffdpe"
    assert count(db, "projector_rejects") == 0


def _returned_lead(lead_id: str) -> list[dict[str, Any]]:
    """A delivered lead, then its buyer's return: the feedback's events come last on the
    timeline and take the revenue back to 0, with no cost of their own."""
    from engine.events import StepIdentity, Timing, stamp_events
    from engine.steps.base import EventDraft

    events = make_lead_events(flow_id="f", lead_id=lead_id, submitted_ms=SUBMITTED_MS)
    fields = {"feedback.type": "return", "feedback.recipient_event_id": events[3]["id"]}
    who = StepIdentity("f", 1, "feedback", "Feedback", 255, "test-host", "0.1.0")
    later = SUBMITTED_MS + 86_400_000
    return events + stamp_events(
        [
            EventDraft("feedback.received", "success", vars=fields, entity_id="premier"),
            EventDraft("feedback.processed", "success", vars=fields, revenue=0.0),
        ],
        who,
        lead_id,
        SUBMITTED_MS,
        events[-1]["vars"],
        Timing(later, later + 2, 5),
    )


_LEAD_COLUMNS = (
    "flow_id, status, last_event_id, last_event_type, last_step_id, cost, revenue,"
    " submitted_at, updated_at, completed"
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(range(7)), cuts=st.sets(st.integers(1, 6), max_size=6))
def test_a_lead_row_is_the_same_whatever_order_its_events_are_read_in(
    db: Connection, order: list[int], cuts: set[int]
) -> None:
    """A rebuild reads topics in any order (the feedback topic before the buyer's): the
    lead's row must come out as if its events had been read in timeline order."""
    from engine.ids import new_lead_id

    in_order, shuffled = new_lead_id(SUBMITTED_MS), new_lead_id(SUBMITTED_MS)
    write_batch(db, "timeline", batch_of(_returned_lead(in_order)))
    events = _returned_lead(shuffled)
    read = [events[i] for i in order]
    bounds = [0, *sorted(cuts), len(read)]
    for n, (a, b) in enumerate(pairwise(bounds)):
        if a < b:
            write_batch(db, "timeline", batch_of(read[a:b], first_offset=100 * n, partition=n))

    rows = {
        lead: db.execute(
            f"SELECT {_LEAD_COLUMNS} FROM leads WHERE lead_id = %s",  # noqa: S608 - constants
            (lead,),
        ).fetchone()
        for lead in (in_order, shuffled)
    }
    expected, got = rows[in_order], rows[shuffled]
    assert expected is not None and got is not None
    # Ids differ only by lead: compare each row to its own lead's last event.
    assert got[3:] == expected[3:]
    assert got[:2] == expected[:2] == ("f", "success")
    assert got[2] == events[-1]["id"]
    assert (got[5], got[6], got[9]) == (2.5, 0.0, True)
