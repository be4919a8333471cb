"""Schema migrations: versioned, idempotent, safe when several projectors start at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql

from engine.errors import ConfigError
from engine.settings import Settings
from projectors.errors import MigrationError
from projectors.store import Migration, connect, load_migrations, migrate

TABLES = {"events", "leads", "projector_checkpoints", "projector_rejects", "schema_migrations"}


def tables(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return {str(name) for (name,) in rows}


def drop(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


ALL_VERSIONS = [m.version for m in load_migrations()]


def test_the_shipped_migrations_are_versioned_sql_files_in_order() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions[0] == "001_events"
    assert versions == sorted(versions)


def test_migrate_creates_the_schema_and_tables_and_a_second_run_does_nothing(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn:
        drop(conn, pg_schema)

        assert migrate(conn, pg_schema) == ALL_VERSIONS
        assert migrate(conn, pg_schema) == []

        assert tables(conn, pg_schema) == TABLES
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert applied == [(v,) for v in ALL_VERSIONS]


def test_projectors_migrating_at_the_same_moment_apply_each_version_once(
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

    assert sorted(results) == [[], [], [], ALL_VERSIONS]
    with connect(pg_settings) as conn:
        assert tables(conn, pg_schema) == TABLES
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(ALL_VERSIONS),
        )


def test_a_new_migration_is_applied_on_top_of_the_applied_ones(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn:
        migrate(conn, pg_schema)
        newer = [*load_migrations(), Migration("002_notes", "CREATE TABLE notes (body text);")]

        assert migrate(conn, pg_schema, newer) == ["002_notes"]
        assert "notes" in tables(conn, pg_schema)


def test_a_migration_edited_after_it_was_applied_is_refused(
    pg_settings: Settings, pg_schema: str
) -> None:
    with connect(pg_settings) as conn:
        migrate(conn, pg_schema)
        original = load_migrations()[0]
        edited = Migration(original.version, original.sql + "\nCREATE TABLE sneaky (x int);\n")

        with pytest.raises(MigrationError, match="001_events was changed"):
            migrate(conn, pg_schema, [edited])
        assert "sneaky" not in tables(conn, pg_schema)


@pytest.mark.parametrize("schema", ["Leadflow", "lead-flow", "x; DROP TABLE events", ""])
def test_a_schema_name_that_is_not_a_plain_lower_case_identifier_is_a_config_error(
    stack: Settings, schema: str
) -> None:
    with pytest.raises(ConfigError, match="db_schema"):
        connect(stack.model_copy(update={"db_schema": schema}))
