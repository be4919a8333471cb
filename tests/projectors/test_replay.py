"""Rebuilding a projection blue/green: identical to one built live, resumable, switched atomically
under a live projector that follows the switch without losing or repeating an event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from engine.runtime.kafka.config import admin_config
from engine.settings import Settings
from engine.topics import events_topic
from projectors.generations import Generation, current, generations, migrate
from projectors.projector import AnalyticsProjector, Projector, TimelineProjector
from projectors.replay import Rebuild
from projectors.store import Connection, connect
from tests.projectors.support import flow_pattern, lead_events, produce, running
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

STEPS = ("source", "service-area", "premier", "completion")


def create_topics(settings: Settings, flow_id: str) -> None:
    admin = AdminClient(admin_config(settings))
    topics = [events_topic(flow_id, step) for step in STEPS]
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
        future.result(30)


def publish(settings: Settings, flow_id: str, leads: int) -> int:
    """``leads`` delivered leads, each event on its step's topic, as the engine writes them."""
    events = lead_events(flow_id, leads)
    step_of = {"source": 0, "filter": 1, "recipient": 2, "flow": 3}
    for index, step in enumerate(STEPS):
        mine = [e for e in events if step_of[e["type"].split(".")[0]] == index]
        produce(settings, events_topic(flow_id, step), mine)
    return len(events)


def rows(conn: Connection, schema: str, table: str, order: str) -> list[tuple[Any, ...]]:
    """Every row of ``schema.table`` but ``xid`` (the writing transaction: physical, not data)."""
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s AND column_name <> 'xid'"
            " ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    ]
    query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(schema, table),
        sql.SQL(order),
    )
    return conn.execute(query).fetchall()


TABLES = (("events", "id"), ("leads", "lead_id"))
ANALYTICS_TABLES = (
    ("daily_event_counts", "flow_id, day, step_id, type, outcome, entity_id, reason"),
)


def assert_same_rows(conn: Connection, a: str, b: str, tables: Any) -> None:
    for table, order in tables:
        left, right = rows(conn, a, table, order), rows(conn, b, table, order)
        assert left, f"{a}.{table} is empty"
        assert left == right, f"{table}: {a} and {b} differ"


def active(conn: Connection, serving: str, name: str) -> Generation:
    found = current(conn, serving, name, "active")
    assert found is not None
    return found


def events_in(conn: Connection, schema: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}.events").format(sql.Identifier(schema)))
    result = row.fetchone()
    return int(result[0]) if result else 0


@pytest.fixture
def main(stack: Settings, unique_id: str) -> Settings:
    return stack.model_copy(
        update={"db_schema": unique_id, "projector_pattern": flow_pattern(unique_id)}
    )


@pytest.fixture
def reference(stack: Settings, unique_id: str) -> Settings:
    """A second serving schema, fed only by live projectors: what "built live" means."""
    return stack.model_copy(
        update={"db_schema": f"{unique_id}_ref", "projector_pattern": flow_pattern(unique_id)}
    )


@contextmanager
def live(settings: Settings) -> Iterator[list[Projector]]:
    """The live projectors of ``settings``' schema, in consumer groups of that schema."""
    with connect(settings) as conn:
        migrate(conn, settings.db_schema)
    pattern = settings.projector_pattern
    projectors: list[Projector] = [
        TimelineProjector(settings, pattern, batch_ms=50),
        AnalyticsProjector(settings, pattern, batch_ms=50),
    ]
    with running(projectors[0]), running(projectors[1]):
        yield projectors


def test_a_rebuild_under_load_switches_atomically_and_equals_the_projection_built_live(
    main: Settings, reference: Settings, unique_id: str
) -> None:
    create_topics(main, unique_id)
    total = publish(main, unique_id, leads=150)
    with connect(main) as conn, live(main) as projectors, live(reference):
        wait_until(lambda: events_in(conn, active(conn, unique_id, "timeline").schema) == total,
                   60, "the live projection")  # fmt: skip
        first = active(conn, unique_id, "timeline")

        # Leads keep arriving while the rebuild runs, and after it switched.
        during = threading.Thread(target=publish, args=(main, unique_id, 150))
        during.start()
        result = Rebuild(main, "timeline", batch_size=200).run(threading.Event())
        analytics = Rebuild(main, "analytics", batch_size=200).run(threading.Event())
        during.join()
        total += 150 * 5 + publish(main, unique_id, leads=50)

        assert result.switched and analytics.switched
        assert result.generation.number == 2 and not result.resumed
        second = active(conn, unique_id, "timeline")
        assert second.schema == result.generation.schema
        assert [g.state for g in generations(conn, unique_id, "timeline")] == ["retired", "active"]
        # The live projector followed the switch and keeps the new generation current.
        wait_until(lambda: events_in(conn, second.schema) == total, 60, "the new generation")
        assert projectors[0].generation == second
        wait_until(lambda: events_in(conn, f"{unique_id}_ref") == total, 60, "the reference")
        # Counted exactly once each, whatever was read by the rebuild and by the live projector.
        wait_until(
            lambda: (
                conn.execute("SELECT sum(events) FROM daily_event_counts").fetchone() == (total,)
            ),
            60,
            "the analytics counts",
        )
        wait_until(
            lambda: (
                conn.execute(
                    sql.SQL("SELECT sum(events) FROM {}.daily_event_counts").format(
                        sql.Identifier(f"{unique_id}_ref")
                    )
                ).fetchone()
                == (total,)
            ),
            60,
            "the reference analytics counts",
        )

        assert_same_rows(conn, second.schema, f"{unique_id}_ref", TABLES)
        assert_same_rows(
            conn,
            active(conn, unique_id, "analytics").schema,
            f"{unique_id}_ref",
            ANALYTICS_TABLES,
        )
        # The serving views read the new generation; the retired one is left as it was.
        assert events_in(conn, unique_id) == total
        assert events_in(conn, first.schema) < total


def _building_rows(settings: Settings) -> int:
    with connect(settings) as conn:
        building = current(conn, settings.db_schema, "timeline", "building")
        return events_in(conn, building.schema) if building else 0


@pytest.mark.serial  # kill -9 half way through: the machine to itself to hit that moment
def test_a_rebuild_killed_mid_way_resumes_from_its_checkpoints_and_ends_identical(
    main: Settings, unique_id: str
) -> None:
    create_topics(main, unique_id)
    total = publish(main, unique_id, leads=400)
    with connect(main) as conn:
        with live(main):
            wait_until(lambda: events_in(conn, unique_id) == total, 60, "the live projection")
        before = active(conn, unique_id, "timeline")
        env = {
            **os.environ,
            "LEADFLOW_DB_SCHEMA": unique_id,
            "LEADFLOW_PROJECTOR_PATTERN": main.projector_pattern,
            "LEADFLOW_LOG_FORMAT": "json",
        }
        command = [sys.executable, "-m", "engine", "replay", "timeline", "--batch-size", "20"]
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until(lambda: _building_rows(main) >= 200, 60, "the rebuild to be half way")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert 0 < _building_rows(main) < total

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "generation 2 is active" in resumed.stderr
        assert "after resuming" in resumed.stderr
        after = active(conn, unique_id, "timeline")
        assert after.number == 2
        assert_same_rows(conn, after.schema, before.schema, TABLES)


def test_a_stopped_rebuild_is_not_switched_and_the_next_run_finishes_it(
    main: Settings, unique_id: str
) -> None:
    create_topics(main, unique_id)
    total = publish(main, unique_id, leads=100)
    stop = threading.Event()

    def stop_after_first_batch(done: int, _: int) -> None:
        if done > 0:
            stop.set()

    with connect(main) as conn:
        migrate(conn, unique_id)
        first = Rebuild(main, "analytics", batch_size=50, on_progress=stop_after_first_batch)
        interrupted = first.run(stop)
        finished = Rebuild(main, "analytics", batch_size=50).run(threading.Event())

        assert not interrupted.switched and 0 < interrupted.records < total
        assert finished.switched and finished.resumed
        assert finished.generation.number == interrupted.generation.number
        assert conn.execute("SELECT sum(events) FROM daily_event_counts").fetchone() == (total,)


def test_a_rebuild_from_a_time_holds_only_the_events_recorded_since(
    main: Settings, unique_id: str
) -> None:
    create_topics(main, unique_id)
    publish(main, unique_id, leads=20)
    time.sleep(0.05)
    since = datetime.now(UTC)
    time.sleep(0.05)
    later = publish(main, unique_id, leads=30)

    result = Rebuild(main, "timeline", from_time=since).run(threading.Event())

    assert result.switched and result.generation.started_from == since
    with connect(main) as conn:
        assert events_in(conn, unique_id) == later
