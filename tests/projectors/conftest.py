"""Fixtures for projector tests: a Postgres schema of their own, migrated or not."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from engine.settings import Settings
from projectors.generations import current, migrate
from projectors.store import Connection, connect


@pytest.fixture
def pg_schema(stack: Settings, unique_id: str) -> Iterator[str]:
    """A fresh, empty schema, dropped with everything in it after the test."""
    url = stack.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(unique_id)))
    yield unique_id
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id)))


@pytest.fixture
def pg_settings(stack: Settings, pg_schema: str) -> Settings:
    """The stack's settings, pointed at the test's schema."""
    return stack.model_copy(update={"db_schema": pg_schema})


@pytest.fixture
def db(pg_settings: Settings) -> Iterator[Connection]:
    """A connection to the test's schema, migrated.

    Its search path also reaches the active timeline generation, so tests can
    name its bookkeeping tables (``projector_checkpoints``, ``projector_rejects``)
    that the serving schema does not expose; ``events`` and ``leads`` still
    resolve to the serving views first.
    """
    with connect(pg_settings) as conn:
        migrate(conn, pg_settings.db_schema)
        timeline = current(conn, pg_settings.db_schema, "timeline", "active")
        assert timeline is not None
        conn.execute(
            sql.SQL("SET search_path TO {}, {}").format(
                sql.Identifier(pg_settings.db_schema), sql.Identifier(timeline.schema)
            )
        )
        yield conn
