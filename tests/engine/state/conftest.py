"""Fixtures for state tests: a Postgres schema of their own, dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from engine.settings import Settings
from engine.state.postgres import migrate_state
from engine.state.store import StateStore


@pytest.fixture
def state_settings(stack: Settings, unique_id: str) -> Iterator[Settings]:
    """The stack's settings on a fresh schema (the store creates it), dropped after the test."""
    yield stack.model_copy(update={"db_schema": unique_id})
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id)))


@pytest.fixture
def store(state_settings: Settings) -> Iterator[StateStore]:
    state = StateStore(state_settings)
    yield state
    state.close()


@pytest.fixture
def db(state_settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain connection to the test's schema, to look at the tables directly."""
    migrate_state(state_settings)  # the store would on first use; the test may look first
    url = state_settings.database_url.get_secret_value()
    with psycopg.connect(
        url, autocommit=True, options=f"-c search_path={state_settings.db_schema}"
    ) as conn:
        yield conn
