"""Fixtures for projector tests: a Postgres schema of their own, migrated or not."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from engine.settings import Settings
from projectors.store import Connection, connect, migrate


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
    """A connection to the test's schema, migrated."""
    with connect(pg_settings) as conn:
        migrate(conn, pg_settings.db_schema)
        yield conn
