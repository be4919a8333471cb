"""The API's Postgres pool: requests share connections, each with the API's statement timeout."""

from __future__ import annotations

import psycopg
import pytest

from engine.settings import Settings
from projectors.store import api_connection

pytestmark = pytest.mark.stack


def test_requests_reuse_a_pooled_connection_with_the_statement_timeout(
    pg_settings: Settings,
) -> None:
    settings = pg_settings.model_copy(update={"api_statement_timeout_ms": 1234})
    with api_connection(settings) as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()
        timeout = conn.execute("SHOW statement_timeout").fetchone()
        schema = conn.execute("SHOW search_path").fetchone()
    with api_connection(settings) as conn:
        again = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert first == again  # given back and taken again, not a new connection per request
    assert timeout == ("1234ms",)
    assert schema is not None and settings.db_schema in schema[0]


def test_a_query_past_the_timeout_is_cancelled_and_the_connection_stays_usable(
    pg_settings: Settings,
) -> None:
    settings = pg_settings.model_copy(update={"api_statement_timeout_ms": 200})
    with api_connection(settings) as conn, pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(2)")
    with api_connection(settings) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
