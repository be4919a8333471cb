"""Dropping generations: a retired one never disturbs the live projector; the active one is
refused, however stale the caller's view of it.

``projections drop analytics 1`` after a rebuild crashed the live analytics
projector: it had had nothing to write since the switch, so it had not moved to
the new generation yet, and its next partition assignment read checkpoints from
the schema just dropped.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from engine.runtime.kafka.config import admin_config
from engine.runtime.kafka.topics import wait_for_leaders
from engine.settings import Settings
from engine.topics import events_topic
from projectors.generations import current, drop, generations, migrate
from projectors.projector import AnalyticsProjector
from projectors.replay import Rebuild
from projectors.store import Connection, connect
from tests.factories import make_lead_events
from tests.projectors.support import (
    create_source_topic,
    flow_pattern,
    lead_events,
    produce,
    running,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def serving(stack: Settings, unique_id: str) -> Settings:
    settings = stack.model_copy(
        update={"db_schema": unique_id, "projector_pattern": flow_pattern(unique_id)}
    )
    with connect(settings) as conn:
        migrate(conn, unique_id)
    return settings


def counted(conn: Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(events), 0) FROM daily_event_counts").fetchone()
    return int(row[0]) if row else 0


def schema_exists(conn: Connection, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def test_dropping_the_retired_generation_leaves_the_live_analytics_projector_running(
    serving: Settings, unique_id: str
) -> None:
    settings = serving
    source = create_source_topic(settings, unique_id)
    produce(settings, source, lead_events(unique_id, 2))
    projector = AnalyticsProjector(settings, settings.projector_pattern, batch_ms=50)
    with running(projector), connect(settings) as conn:
        wait_until(lambda: counted(conn) == 10, 30, "the live projector to count 10 events")
        result = Rebuild(settings, "analytics").run(threading.Event())
        assert result.switched
        [retired] = [g for g in generations(conn, unique_id, "analytics") if g.state == "retired"]
        drop(conn, retired)  # the live projector has had nothing to write since the switch

        # A new topic of the flow: the live projector is assigned its partitions.
        topic = events_topic(unique_id, "premier")
        admin = AdminClient(admin_config(settings))
        admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
        wait_for_leaders(admin, [topic])
        produce(settings, topic, make_lead_events(flow_id=unique_id))
        wait_until(lambda: counted(conn) == 15, 45, "the new topic's events to be counted")
        assert projector.generation == current(conn, unique_id, "analytics", "active")


def test_the_active_generation_is_never_dropped_even_through_a_stale_view_of_it(
    serving: Settings, unique_id: str
) -> None:
    with connect(serving) as conn:
        active = current(conn, unique_id, "analytics", "active")
        assert active is not None
        # As read before a rebuild switched it in, say: the caller thinks it is building.
        stale = dataclasses.replace(active, state="building")
        with pytest.raises(ValueError, match="is active"):
            drop(conn, stale)
        assert schema_exists(conn, active.schema)
        assert current(conn, unique_id, "analytics", "active") == active
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.daily_event_counts").format(
                sql.Identifier(active.schema)
            )
        ).fetchone()
        assert row is not None  # its tables are still there to read
