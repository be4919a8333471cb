"""Fixtures for the seed tests: a Postgres schema of their own for the run's state tables
and projections, so a run never depends on what other runs left in the shared schema."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from engine.settings import Settings


@pytest.fixture
def own_schema(stack: Settings, unique_id: str) -> Iterator[Settings]:
    """The stack's settings with a fresh schema (dropped with everything in it after)."""
    url = stack.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(unique_id)))
    yield stack.model_copy(update={"db_schema": unique_id})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id)))
