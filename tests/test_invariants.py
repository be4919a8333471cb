"""Invariants over a whole run of the demo flow: what every event, table, page and rebuild must
satisfy, checked on the real thing rather than on hand-made events.

One run of ``flows/demo.yaml`` (source, phone check, filter, two buyers with retries and a
realistic mix of answers, buyer feedback with second reports) in ``leadflow run`` processes,
with the live timeline and analytics projectors. Paging walks run while the leads flow. Then:

* every event's snapshot totals agree with the events before it on the lead's timeline;
* a lead's events are in the order they happened, feedback included;
* ``leads`` and ``daily_event_counts`` are exactly what the events say (an oracle here,
  written apart from the projection's SQL);
* every walk through ``GET /events`` (forwards and backwards, both sorts, each filter) saw
  every event it should exactly once;
* every rebuild - from the beginning, with the topics read in any order, from a time,
  interrupted and resumed - equals the live projection row for row, and the stats and
  analytics answers do not change across the switch.

Each check was written against a defect it would have caught (issue #14): the final
snapshot regressing, replay dropping the facts of feedback-first reads, ``after_id`` under
``desc`` repeating pages, a lead's feedback sorting before earlier feedback.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from fastapi.testclient import TestClient
from psycopg import sql

from engine.api.app import create_app
from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_leads
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import publish_feedback
from engine.runtime.kafka.config import admin_config, consumer_config
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.generations import create_building, current, drop, migrate_database
from projectors.projections import projection
from projectors.replay import Rebuild
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.conftest import _delete_topics_of, _drop_schemas_of
from tests.keys import admin_client
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("demo_run")]

DEMO_FLOW = Path(__file__).parents[1] / "flows" / "demo.yaml"
LEADS = 160
PAGE = 25
Row = dict[str, Any]


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Walk:
    """One client paging through ``GET /events`` while events were being written."""

    params: dict[str, Any]
    forwards: bool
    descending: bool
    seen: list[str] = field(default_factory=list)
    start: str | None = None  # the event the walk started from (and included)
    cursor: str | None = None
    error: str | None = None
    done: bool = False  # a backward walk that reached the oldest event


@dataclass
class DemoRun:
    settings: Settings
    flow: Flow
    lead_ids: list[str]
    live_timeline: str  # the generation schemas the live projectors wrote
    live_analytics: str
    between: datetime  # after the first half of the leads was submitted
    walks: list[Walk]
    answers: dict[str, Any]  # stats and analytics answers of the live projection
    client: TestClient


def _demo_flow(flow_id: str, buyer: BuyerServer) -> Flow:
    """``flows/demo.yaml`` under its own id, its services on the test's buyer, no destinations
    (streaming has its own tests; here it would only slow the run)."""
    text = DEMO_FLOW.read_text(encoding="utf-8").split("\ndestinations:")[0]
    text = text.replace("id: demo\n", f"id: {flow_id}\n", 1)
    # Clear values, as before the demo sealed them: sealing has its own proofs (tests/security/
    # test_sealing_at_rest.py, test_erasure_proof.py); here it would only need a master key.
    text = re.sub(r"\nsensitive_fields: .*\n", "\n", text, count=1)
    text = text.replace("http://127.0.0.1:8765", buyer.url.rsplit("/", 1)[0])
    return parse_flow(text, f"{flow_id}.yaml")


def _page(client: TestClient, params: dict[str, Any]) -> list[str]:
    answer = client.get("/events", params=params)
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()]


def _step(client: TestClient, walk: Walk) -> bool:
    """One more page of ``walk``; False once a page comes back empty."""
    sort = "desc" if walk.descending else "asc"
    if walk.cursor is None:  # from one end: the oldest event forwards, the newest backwards
        first = _page(
            client, {**walk.params, "limit": 1, "sort": "asc" if walk.forwards else "desc"}
        )
        if not first:
            return False
        walk.start = walk.cursor = first[0]
        walk.seen.append(first[0])
        return True
    key = "after_id" if walk.forwards else "before_id"
    page = _page(client, {**walk.params, "limit": PAGE, "sort": sort, key: walk.cursor})
    if not page:
        return False
    newest, oldest = (page[0], page[-1]) if walk.descending else (page[-1], page[0])
    walk.seen += page
    walk.cursor = newest if walk.forwards else oldest
    return True


def _walk_while(client: TestClient, walks: list[Walk], busy: Callable[[], bool]) -> None:
    """Page every walk, a page each in turn, while events are being written."""
    active = list(walks)
    while active and busy():
        for walk in list(active):
            try:
                # A backward walk ends at the oldest event (once it has started: the first
                # page is empty while a transaction older than every event is still open).
                if not _step(client, walk) and not walk.forwards and walk.start is not None:
                    walk.done = True
                    active.remove(walk)
            except AssertionError as exc:
                walk.error = str(exc)
                active.remove(walk)
        time.sleep(0.02)


def _walks(flow_id: str, lead_id: str, t0: datetime, between: datetime) -> list[Walk]:
    filters: list[dict[str, Any]] = [
        {},
        {"flow_id": flow_id},
        {"type": "recipient.delivered"},
        {"outcome": "failure"},
        {"step_id": "premier"},
        {"lead_id": lead_id},
        {"start": t0.isoformat(), "end": between.isoformat()},
    ]
    return [
        Walk(params, forwards, descending)
        for params in filters
        for forwards in (True, False)
        for descending in (False, True)
    ]


def _send_feedback(settings: Settings, conn: Connection, lead_ids: list[str]) -> int:
    """Buyers report back on some deliveries; every fifth lead converts, then is returned."""
    rows = conn.execute(
        "SELECT id, lead_id FROM events WHERE type = 'recipient.delivered' AND lead_id = ANY(%s)"
        " ORDER BY id LIMIT 30",
        (lead_ids,),
    ).fetchall()
    sent = 0
    for n, (event_id, lead_id) in enumerate(rows):
        reports = ["return"] if n % 3 == 0 else ["conversion"]
        if n % 5 == 0:
            reports = ["conversion", "return"]
        for kind in reports:
            body = orjson.dumps({"event_id": event_id, "type": kind, "reason": f"{kind} {n}"})
            publish_feedback(settings, body, lead_id.encode())
            sent += 1
    return sent


def _count(conn: Connection, query: str, *params: Any) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _answers(client: TestClient, flow_id: str) -> dict[str, Any]:
    """What the stats and analytics routes say about the run: the same before and after a
    rebuild switches generations."""
    routes = {
        "stats": ("/events/stats", {"flow_id": flow_id, "interval": "day",
                                    "group_by": "type,outcome,step,source,recipient,reason"}),
        "daily": (f"/flows/{flow_id}/analytics/daily",
                  {"group_by": "type,outcome,step,entity,reason"}),
        **{part: (f"/flows/{flow_id}/analytics/{part}", {})
           for part in ("steps", "reasons", "sources", "recipients")},
    }  # fmt: skip
    out = {}
    for name, (path, params) in routes.items():
        answer = client.get(path, params=params)
        assert answer.status_code == 200, f"{path}: {answer.text}"
        out[name] = answer.json()
    return out


@pytest.fixture(scope="module")
def demo_run(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    unique = "inv" + uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp(unique)
    settings = stack.model_copy(
        update={
            "db_schema": unique,
            "projector_pattern": rf"^leadflow\.{unique}\.events\..+$",
            "feedback_topic": f"leadflow.{unique}.feedback",
            "export_worker_in_api": False,
        }
    )
    buyer = BuyerServer(port=0, mix=True)
    buyer.start_in_thread()
    flow = _demo_flow(unique, buyer)
    flow_file = tmp / "flow.yaml"
    flow_file.write_text(orjson.dumps(flow.model_dump(mode="json")).decode(), encoding="utf-8")
    prepare_topics(settings, flow)
    migrate_database(settings)
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": unique,
        "LEADFLOW_PROJECTOR_PATTERN": settings.projector_pattern,
        "LEADFLOW_FEEDBACK_TOPIC": settings.feedback_topic,
        "LEADFLOW_LOG_FORMAT": "json",
    }
    roles = [s.id for s in flow.steps] + ["projector", "analytics", "feedback"]
    log_path = tmp / "workers.log"
    with log_path.open("wb") as log:
        workers = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "-f", str(flow_file), *roles],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    client = admin_client(create_app(settings))
    leads = list(fake_leads(LEADS, seed=14))
    try:
        with connect(settings) as conn:
            t0 = datetime.now(UTC)
            first = publish_leads(settings, flow.id, leads[: LEADS // 2])
            wait_until(
                lambda: _count(conn, "SELECT count(*) FROM leads WHERE completed") > LEADS // 4,
                120,
                "a quarter of the leads to complete",
                every=0.3,
            )
            between = datetime.now(UTC)
            walks = _walks(flow.id, first[0], t0, between)
            writing = threading.Event()
            writing.set()
            walker = threading.Thread(target=_walk_while, args=(client, walks, writing.is_set))
            walker.start()
            try:
                second = publish_leads(settings, flow.id, leads[LEADS // 2 :])
                lead_ids = first + second
                wait_until(
                    lambda: _count(conn, "SELECT count(*) FROM leads WHERE completed") == LEADS,
                    240,
                    "every lead to complete",
                    every=0.5,
                )
                sent = _send_feedback(settings, conn, lead_ids)
                wait_until(
                    lambda: (
                        _count(
                            conn, "SELECT count(*) FROM events WHERE type = 'feedback.processed'"
                        )
                        == sent
                    ),
                    120,
                    f"{sent} feedback reports processed",
                    every=0.5,
                )
                wait_until(
                    lambda: (
                        _count(conn, "SELECT sum(events) FROM daily_event_counts")
                        == _count(conn, "SELECT count(*) FROM events")
                    ),
                    120,
                    "the analytics projector to catch up",
                    every=0.5,
                )
            finally:
                writing.clear()
                walker.join(60)
            assert workers.poll() is None, log_path.read_text()[-3000:]
            os.killpg(workers.pid, signal.SIGTERM)
            assert workers.wait(60) == 0, log_path.read_text()[-3000:]
            # Forward walks go on to the end now that nothing is written any more, once
            # every event is older than every transaction still open on the server (only
            # then does a page show it: see projectors.search).
            wait_until(
                lambda: (
                    _count(
                        conn,
                        "SELECT count(*) FROM events"
                        " WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())",
                    )
                    == 0
                ),
                180,
                "every event to fall behind the visibility horizon",
                every=0.5,
            )
            # Backward walks that had not started yet start now.
            for walk in walks:
                while not walk.done and walk.error is None and _step(client, walk):
                    pass
            timeline = current(conn, unique, "timeline", "active")
            analytics = current(conn, unique, "analytics", "active")
            assert timeline is not None and analytics is not None
            yield DemoRun(
                settings,
                flow,
                lead_ids,
                timeline.schema,
                analytics.schema,
                between,
                walks,
                _answers(client, flow.id),
                client,
            )
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait(30)
        buyer.stop()
        _delete_topics_of(stack, unique)
        _drop_schemas_of(stack, unique)


# -- reading a generation --------------------------------------------------------------------

_EVENT_FIELDS = (
    "id, lead_id, flow_id, type, outcome, step_id, entity_id, reason, ts, ms, cost,"
    " revenue, end_timestamp, total_ms, xid::text AS xid, snapshot"
)


def _events(conn: Connection, schema: str) -> list[Row]:
    cur = conn.execute(
        sql.SQL("SELECT {} FROM {}.events ORDER BY id").format(
            sql.SQL(_EVENT_FIELDS), sql.Identifier(schema)
        )
    )
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _table(conn: Connection, schema: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``schema.table`` but ``xid`` (which transaction wrote it: not data), sorted."""
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s AND column_name <> 'xid'"
            " ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    ]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table)
    )
    return sorted(conn.execute(query).fetchall(), key=repr)


def _assert_same(conn: Connection, built: str, live: str, tables: tuple[str, ...]) -> None:
    for table in tables:
        expected = _table(conn, live, table)
        assert expected, f"{live}.{table} is empty"
        got = _table(conn, built, table)
        assert len(got) == len(expected), f"{table}: {len(got)} rows, live has {len(expected)}"
        assert got == expected, f"{table}: {built} differs from the live {live}"


TIMELINE_TABLES = ("events", "leads")
ANALYTICS_TABLES = ("daily_event_counts", "counted_events")


def _leads_oracle(events: list[Row]) -> dict[str, tuple[Any, ...]]:
    """What ``leads`` must hold for these events: per lead, the newest event's state, cost and
    revenue of the newest event that has one, the earliest submission, the latest time."""
    by_lead: dict[str, list[Row]] = defaultdict(list)
    for e in events:
        by_lead[e["lead_id"]].append(e)
    out = {}
    for lead_id, mine in by_lead.items():
        mine.sort(key=lambda e: e["id"])
        last = mine[-1]
        costed = [e for e in mine if e["cost"] is not None]
        paid = [e for e in mine if e["revenue"] is not None]
        out[lead_id] = (
            last["flow_id"], last["outcome"], last["id"], last["type"], last["step_id"],
            costed[-1]["cost"] if costed else None, costed[-1]["id"] if costed else None,
            paid[-1]["revenue"] if paid else None, paid[-1]["id"] if paid else None,
            min(e["end_timestamp"] - e["total_ms"] for e in mine),
            max(e["ts"] for e in mine),
            any(e["type"] == "flow.completed" for e in mine),
        )  # fmt: skip
    return out


def _leads_table(conn: Connection, schema: str) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        sql.SQL(
            "SELECT lead_id, flow_id, status, last_event_id, last_event_type, last_step_id, cost,"
            " cost_event_id, revenue, revenue_event_id,"
            " round(extract(epoch FROM submitted_at) * 1000)::bigint, updated_at, completed"
            " FROM {}.leads"
        ).format(sql.Identifier(schema))
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def _analytics_oracle(conn: Connection, timeline: str) -> list[tuple[Any, ...]]:
    """``daily_event_counts`` recomputed in one pass over the generation's events."""
    return sorted(
        conn.execute(
            sql.SQL(
                "SELECT flow_id, (ts AT TIME ZONE 'UTC')::date, step_id, type, outcome,"
                " coalesce(entity_id, ''), coalesce(reason, ''), count(*), sum(ms), max(ms),"
                " coalesce(sum(cost::numeric), 0), coalesce(sum(revenue::numeric), 0)"
                " FROM {}.events GROUP BY 1, 2, 3, 4, 5, 6, 7"
            ).format(sql.Identifier(timeline))
        ).fetchall(),
        key=repr,
    )


def _analytics_table(conn: Connection, schema: str) -> list[tuple[Any, ...]]:
    return sorted(
        conn.execute(
            sql.SQL(
                "SELECT flow_id, day, step_id, type, outcome, entity_id, reason, events,"
                " ms_total, ms_max, cost, revenue FROM {}.daily_event_counts"
            ).format(sql.Identifier(schema))
        ).fetchall(),
        key=repr,
    )


def _assert_what_the_events_say(conn: Connection, timeline: str, analytics: str | None) -> None:
    events = _events(conn, timeline)
    assert events, f"{timeline} has no events"
    assert _leads_table(conn, timeline) == _leads_oracle(events)
    if analytics is not None:
        assert _analytics_table(conn, analytics) == _analytics_oracle(conn, timeline)


# -- what every event says -----------------------------------------------------------------------


def _timelines(conn: Connection, schema: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in _events(conn, schema):
        out[e["lead_id"]].append(e["snapshot"])
    return out


def test_every_snapshot_agrees_with_the_events_before_it(demo_run: DemoRun) -> None:
    """Totals in each event's snapshot are those of the lead's events up to it: cost from the
    source plus each paid lookup's, +1 delivery and its price per ``recipient.delivered``, a
    return taking one delivery's price back; ``flow.completed`` says the same in its snapshot
    and its fields."""
    checked = 0
    with connect(demo_run.settings) as conn:
        timelines = _timelines(conn, demo_run.live_timeline)
    assert len(timelines) == LEADS
    for lead_id, timeline in timelines.items():
        cost: float | None = None
        prices: dict[str, float] = {}
        returned: set[str] = set()
        for event in timeline:
            kind, totals = event["type"], event["vars"]
            if kind == "source.accepted":
                cost = event["cost"]
            elif kind.startswith("enhancement.") and cost is not None:
                cost += event["cost"] or 0.0  # the phone check's price (0 on an error)
            elif kind == "recipient.delivered":
                prices[event["id"]] = event["revenue"]
            elif kind == "feedback.processed" and totals["feedback.type"] == "return":
                returned.add(totals["feedback.recipient_event_id"])
            revenue = sum(p for d, p in prices.items() if d not in returned)
            if cost is None:  # before acceptance, or rejected: the engine keeps no totals
                assert "totals.revenue" not in totals, (lead_id, kind)
                continue
            where = f"lead {lead_id}, {kind} {event['id']}"
            assert totals["totals.cost"] == pytest.approx(cost), where
            assert totals["totals.delivered"] == len(prices), where
            assert totals["totals.revenue"] == pytest.approx(revenue), where
            if kind == "flow.completed":
                assert (event["cost"], event["revenue"]) == (
                    pytest.approx(cost),
                    pytest.approx(revenue),
                ), where
                assert (event["outcome"] == "success") == bool(prices), where
            if kind == "feedback.processed":
                assert event["revenue"] == pytest.approx(revenue), where
            checked += 1
    assert checked > LEADS  # the run delivered, and gave feedback


def test_a_leads_events_are_in_the_order_they_happened(demo_run: DemoRun) -> None:
    """Along a lead's timeline (ids in order), events never go back in time: each step after
    the one before, retries after the failure, feedback after the steps and in the order
    it was given; each lead has exactly one ``flow.completed``, after its steps."""
    with connect(demo_run.settings) as conn:
        timelines = _timelines(conn, demo_run.live_timeline)
    twice = 0
    for lead_id, timeline in timelines.items():
        ends = [e["end_timestamp"] for e in timeline]
        assert ends == sorted(ends), f"lead {lead_id}: {[e['type'] for e in timeline]}"
        kinds = [e["type"] for e in timeline]
        assert kinds.count("flow.completed") == 1, lead_id
        after = kinds[kinds.index("flow.completed") + 1 :]
        assert all(k.startswith("feedback.") for k in after), (lead_id, kinds)
        twice += after.count("feedback.received") > 1
    assert twice > 0  # some leads got a second report, whose order is the point


def test_the_live_tables_are_what_the_events_say(demo_run: DemoRun) -> None:
    with connect(demo_run.settings) as conn:
        _assert_what_the_events_say(conn, demo_run.live_timeline, demo_run.live_analytics)


def test_every_walk_through_the_pages_saw_each_event_once(demo_run: DemoRun) -> None:
    """Walks ran while leads and their events were being written: forwards (after_id) they
    end with every matching event, backwards (before_id) with every one up to where they
    started; never an event twice, in either sort."""
    with connect(demo_run.settings) as conn:
        events = _events(conn, demo_run.live_timeline)
    position = {e["id"]: (int(e["xid"]), e["id"]) for e in events}

    def matches(e: Row, params: dict[str, Any]) -> bool:
        return all(
            (e["ts"] >= datetime.fromisoformat(v)) if k == "start"
            else (e["ts"] < datetime.fromisoformat(v)) if k == "end"
            else e[k] == v
            for k, v in params.items()
        )  # fmt: skip

    for walk in demo_run.walks:
        label = f"{walk.params} {'after_id' if walk.forwards else 'before_id'} " + (
            "desc" if walk.descending else "asc"
        )
        assert walk.error is None, f"{label}: {walk.error}"
        assert len(walk.seen) == len(set(walk.seen)), f"{label}: an event came twice"
        wanted = [e for e in events if matches(e, walk.params)]
        assert wanted, label
        if not walk.forwards and walk.start is not None:
            wanted = [e for e in wanted if position[e["id"]] <= position[walk.start]]
        assert set(walk.seen) == {e["id"] for e in wanted}, label
    assert sum(len(w.seen) for w in demo_run.walks) > len(events)


# -- rebuilds -----------------------------------------------------------------------------------


def _active(conn: Connection, serving: str, name: str) -> str:
    found = current(conn, serving, name, "active")
    assert found is not None
    return found.schema


def test_a_rebuild_from_the_beginning_equals_the_live_projection(demo_run: DemoRun) -> None:
    settings = demo_run.settings
    timeline = Rebuild(settings, "timeline", batch_size=97).run(threading.Event())
    analytics = Rebuild(settings, "analytics", batch_size=97).run(threading.Event())
    assert timeline.switched and analytics.switched
    with connect(settings) as conn:
        _assert_same(conn, timeline.generation.schema, demo_run.live_timeline, TIMELINE_TABLES)
        _assert_same(conn, analytics.generation.schema, demo_run.live_analytics, ANALYTICS_TABLES)
        assert _active(conn, settings.db_schema, "timeline") == timeline.generation.schema
    # Readers see the same answers from the rebuilt generation.
    assert _answers(demo_run.client, demo_run.flow.id) == demo_run.answers


def _all_records(settings: Settings, flow_id: str) -> dict[str, list[Record]]:
    """Every committed record of the flow's event topics, by topic."""
    consumer = Consumer(consumer_config(settings, f"inv-{uuid.uuid4().hex}",
                                        **{"enable.partition.eof": True}))  # fmt: skip
    try:
        metadata = consumer.list_topics(timeout=10).topics
        parts = [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in sorted(metadata)
            if topic.startswith(f"leadflow.{flow_id}.events.")
            for p in metadata[topic].partitions
        ]
        consumer.assign(parts)
        ended: set[tuple[str, int]] = set()
        out: dict[str, list[Record]] = defaultdict(list)
        while len(ended) < len(parts):
            for msg in consumer.consume(500, timeout=1):
                topic, partition = msg.topic() or "", msg.partition() or 0
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    ended.add((topic, partition))
                elif err is None:
                    out[topic].append(
                        Record(topic, partition, msg.offset() or 0, msg.value(), msg.key())
                    )
        return out
    finally:
        consumer.close()


def _orders(by_topic: dict[str, list[Record]]) -> dict[str, list[list[Record]]]:
    """The same records in batches read in orders a live projector rarely meets."""
    topics = sorted(by_topic, key=lambda t: (not t.endswith(".feedback"), t), reverse=False)
    feedback_first = [
        by_topic[t][i : i + 50] for t in topics for i in range(0, len(by_topic[t]), 50)
    ]
    last_step_first = [by_topic[t] for t in sorted(by_topic, reverse=True)]
    shuffled = [r for records in by_topic.values() for r in records]
    random.Random(14).shuffle(shuffled)
    return {
        "feedback topic first": feedback_first,
        "last step first": last_step_first,
        "shuffled": [shuffled[i : i + 37] for i in range(0, len(shuffled), 37)],
    }


@pytest.mark.parametrize("name", ["timeline", "analytics"])
def test_a_rebuild_that_reads_the_topics_in_any_order_equals_the_live_one(
    demo_run: DemoRun, name: str
) -> None:
    settings, codec = demo_run.settings, EventCodec()
    orders = _orders(_all_records(settings, demo_run.flow.id))
    live = demo_run.live_timeline if name == "timeline" else demo_run.live_analytics
    tables = TIMELINE_TABLES if name == "timeline" else ANALYTICS_TABLES
    with connect(settings) as conn:
        for label, batches in orders.items():
            building = create_building(conn, settings.db_schema, name, None)
            try:
                for batch in batches:
                    write_batch(conn, "inv", build_batch(codec, batch), building, projection(name))
                try:
                    _assert_same(conn, building.schema, live, tables)
                except AssertionError as exc:
                    raise AssertionError(f"read {label}: {exc}") from None
            finally:
                drop(conn, building)


def _offsets_at(settings: Settings, flow_id: str, at: datetime) -> dict[tuple[str, int], int]:
    """Each partition's first offset at or after ``at`` (its end where there is none)."""
    admin = AdminClient(admin_config(settings))
    metadata = admin.list_topics(timeout=10).topics
    parts = [
        TopicPartition(t, p)
        for t in metadata
        if t.startswith(f"leadflow.{flow_id}.events.")
        for p in metadata[t].partitions
    ]

    def listed(spec: OffsetSpec) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets(
            {tp: spec for tp in parts}, isolation_level=IsolationLevel.READ_COMMITTED
        )
        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}

    found = listed(OffsetSpec.for_timestamp(int(at.timestamp() * 1000)))
    ends = listed(OffsetSpec.latest())  # type: ignore[no-untyped-call]
    return {tp: offset if offset >= 0 else ends[tp] for tp, offset in found.items()}


def test_a_rebuild_from_a_time_holds_exactly_the_events_since_and_what_they_say(
    demo_run: DemoRun,
) -> None:
    settings = demo_run.settings
    since = demo_run.between
    result = Rebuild(settings, "timeline", from_time=since, batch_size=61).run(threading.Event())
    assert result.switched
    starts = _offsets_at(settings, demo_run.flow.id, since)
    with connect(settings) as conn:
        offsets = conn.execute(
            sql.SQL("SELECT id, kafka_topic, kafka_partition, kafka_offset FROM {}.events").format(
                sql.Identifier(demo_run.live_timeline)
            )
        ).fetchall()
        expected = {i for i, t, p, o in offsets if o >= starts[(t, p)]}
        got = {e["id"] for e in _events(conn, result.generation.schema)}
        assert got == expected
        assert 0 < len(got) < len(offsets)
        # Leads that began before the time have only their later events: their rows say so.
        _assert_what_the_events_say(conn, result.generation.schema, None)


def test_an_interrupted_rebuild_resumed_equals_the_live_one(demo_run: DemoRun) -> None:
    settings = demo_run.settings
    for name, live, tables in (
        ("timeline", demo_run.live_timeline, TIMELINE_TABLES),
        ("analytics", demo_run.live_analytics, ANALYTICS_TABLES),
    ):
        stop = threading.Event()

        def stop_after_some(done: int, _: int, stop: threading.Event = stop) -> None:
            if done >= 200:
                stop.set()

        first = Rebuild(settings, name, batch_size=50, on_progress=stop_after_some).run(stop)
        assert not first.switched and first.records >= 200
        resumed = Rebuild(settings, name, batch_size=50).run(threading.Event())
        assert resumed.switched and resumed.resumed
        assert resumed.generation.number == first.generation.number
        with connect(settings) as conn:
            _assert_same(conn, resumed.generation.schema, live, tables)
