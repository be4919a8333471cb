"""Schema migrations: versioned, idempotent, safe when several projectors start at once,
and laid out as a serving schema of views over one active generation per projection."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from engine.errors import ConfigError
from engine.pgmigrate import Migration, apply_migrations, load_migrations
from engine.retention import partition_of, partitions_to_make
from engine.settings import Settings
from projectors.errors import MigrationError
from projectors.generations import current, generations, migrate
from projectors.projections import NAMES, projection
from projectors.store import connect

Conn = psycopg.Connection[tuple[object, ...]]

SERVING_TABLES = {
    "projection_generations",
    "projection_migrations",
    # The API's key store and read audit (engine.access), beside the views it reads.
    "engine_access_migrations",
    "engine_api_keys",
    "engine_pii_reads",
}
VIEWS = {
    "events",
    "leads",
    "daily_event_counts",
    # the analytics of issue #20 (analytics migrations 003 and 004)
    "hourly_step_stats",
    "hourly_durations",
    "hourly_reasons",
    "lead_facts",
    "lead_enhancements",
    "delivery_facts",
    "hourly_lead_outcomes",
}
TIMELINE_TABLES = {
    "events",
    "event_ids",  # each event id once, across the day partitions of events
    "leads",
    "projector_checkpoints",
    "projector_rejects",
    "schema_migrations",
}


def relations(conn: Conn, schema: str, kind: str = "BASE TABLE") -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = %s AND table_type = %s",
        (schema, kind),
    ).fetchall()
    return {str(name) for (name,) in rows}


def drop(conn: Conn, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def every_version(schema: str) -> list[str]:
    serving = [m.version for m in load_migrations("projectors", "migrations/serving")]
    access = [m.version for m in load_migrations("engine.access")]  # keys and read audit
    return [
        *serving,
        *(
            f"{schema}_{name}_1.{m.version}"
            for name in NAMES
            for m in projection(name).migrations()
        ),
        *access,
    ]


def test_each_projection_ships_versioned_sql_files_in_order() -> None:
    for name in NAMES:
        versions = [m.version for m in projection(name).migrations()]
        assert versions and versions[0].startswith("001_")
        assert versions == sorted(versions)


@pytest.mark.stack
def test_migrate_builds_the_serving_views_over_a_first_active_generation_and_is_idempotent(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn:
        drop(conn, pg_schema)

        assert migrate(conn, pg_schema) == every_version(pg_schema)
        assert migrate(conn, pg_schema) == []

        assert relations(conn, pg_schema) == SERVING_TABLES
        assert relations(conn, pg_schema, "VIEW") == VIEWS
        timeline = current(conn, pg_schema, "timeline", "active")
        assert timeline is not None and timeline.number == 1
        tables = relations(conn, timeline.schema)
        # events is partitioned by day: yesterday's, today's and the days ahead exist.
        partitions = {t for t in tables if partition_of(t) is not None}
        assert tables - partitions == TIMELINE_TABLES
        assert {p.name for p in partitions_to_make(datetime.now(UTC))} <= partitions
        assert [(g.projection, g.state) for g in generations(conn, pg_schema)] == [
            ("analytics", "active"),
            ("timeline", "active"),
        ]


@pytest.mark.stack
def test_projectors_migrating_at_the_same_moment_create_one_generation_each(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn:
        drop(conn, pg_schema)  # the race includes creating the schema
    start = threading.Barrier(4)

    def migrate_on_own_connection() -> list[str]:
        with connect(pg_settings) as conn:
            start.wait()
            return migrate(conn, pg_schema)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate_on_own_connection(), range(4)))

    assert sorted(results) == [[], [], [], every_version(pg_schema)]
    with connect(pg_settings) as conn:
        assert len(generations(conn, pg_schema)) == len(NAMES)


@pytest.mark.stack
def test_the_layout_from_before_generations_is_moved_into_generation_1_with_its_rows(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn, conn.transaction(), conn.cursor() as cur:
        # What 0.2 left: the timeline's tables right in the configured schema (from before
        # the partitioned events of 007, which only ever ran in a generation).
        before_007 = [m for m in projection("timeline").migrations() if m.version < "007"]
        apply_migrations(cur, pg_schema, "schema_migrations", before_007)
        cur.execute(
            "INSERT INTO leads VALUES ('L1', 'f', 'success', 'E1', 'flow.completed', 'c',"
            " 1, 2, now(), now(), true)"
        )
    with connect(pg_settings) as conn:
        migrate(conn, pg_schema)

        assert relations(conn, pg_schema) == SERVING_TABLES
        assert conn.execute("SELECT lead_id FROM leads").fetchall() == [("L1",)]
        timeline = current(conn, pg_schema, "timeline", "active")
        assert timeline is not None
        assert {
            t for t in relations(conn, timeline.schema) if partition_of(t) is None
        } == TIMELINE_TABLES


@pytest.mark.stack
def test_a_generation_whose_migration_was_edited_after_it_was_applied_is_refused(
    pg_settings: Settings, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connect(pg_settings) as conn:
        migrate(conn, pg_schema)
        original = projection("timeline").migrations()
        edited = Migration(original[0].version, original[0].sql + "\nCREATE TABLE sneaky (x int);")
        monkeypatch.setattr(
            type(projection("timeline")), "migrations", lambda self: [edited, *original[1:]]
        )

        with pytest.raises(MigrationError, match="001_events was changed"):
            migrate(conn, pg_schema)
        timeline = current(conn, pg_schema, "timeline", "active")
        assert timeline is not None and "sneaky" not in relations(conn, timeline.schema)


@pytest.mark.stack
@pytest.mark.parametrize("schema", ["Leadflow", "lead-flow", "x; DROP TABLE events", ""])
def test_a_schema_name_that_is_not_a_plain_lower_case_identifier_is_a_config_error(
    stack: Settings, schema: str
) -> None:
    with pytest.raises(ConfigError, match="db_schema"):
        connect(stack.model_copy(update={"db_schema": schema}))


@pytest.mark.stack
def test_migration_006_recomputes_lead_rows_a_replay_had_left_without_their_facts(
    stack: Settings, unique_id: str
) -> None:
    """Before 006 a rebuild that read the feedback topic first left leads completed = false and
    cost NULL (issue #14); the migration rebuilds every row from its events."""
    from projectors.batch import EVENT_COLUMNS, Record, build_batch
    from projectors.store import stage_events
    from schemas.codec import EventCodec
    from tests.factories import make_lead_events

    timeline = projection("timeline").migrations()
    upto_005 = [m for m in timeline if m.version < "006"]
    codec = EventCodec()
    events = make_lead_events(flow_id="f")
    schema = f"{unique_id}_m"
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        try:
            with conn.transaction(), conn.cursor() as cur:
                apply_migrations(cur, schema, "schema_migrations", upto_005)
                records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(events)]
                # The events as the write path of 005 left them (today's needs 007's
                # partitions), and a lead row as the old upsert left it after a
                # feedback-first read: not completed, no cost.
                stage_events(cur, build_batch(codec, records))
                columns = sql.SQL(", ").join(sql.Identifier(n) for n, _ in EVENT_COLUMNS)
                values = sql.SQL(", ").join(
                    sql.SQL("convert_from(snapshot, 'UTF8')::jsonb")
                    if n == "snapshot"
                    else sql.Identifier(n)
                    for n, _ in EVENT_COLUMNS
                )
                cur.execute(
                    sql.SQL("INSERT INTO events ({}) SELECT {} FROM events_stage").format(
                        columns, values
                    )
                )
                cur.execute(
                    "INSERT INTO leads (lead_id, flow_id, status, last_event_id,"
                    " last_event_type, last_step_id, submitted_at, updated_at)"
                    " SELECT lead_id, flow_id, 'success', max(id), 'x', 'x', now(), now()"
                    " FROM events GROUP BY 1, 2"
                )
            with conn.transaction(), conn.cursor() as cur:
                applied = apply_migrations(cur, schema, "schema_migrations", timeline)
                row = cur.execute(
                    "SELECT completed, cost, revenue, cost_event_id, last_event_id FROM leads"
                ).fetchone()
            assert "006_leads_order_free" in applied
            assert row == (True, 2.5, 30.0, events[-1]["id"], events[-1]["id"])
        finally:
            drop(conn, schema)
