"""The system events outbox as the shared contract defines it (state migration 006, built
beside this work): created here when the state migrations do not create it yet, so tests
of code that writes system events run either way, and read back by type."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.settings import Settings

_CONTRACT = """
CREATE TABLE IF NOT EXISTS {}.system_event_outbox (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    flow_id      text NULL,
    subject      text NOT NULL,
    data         jsonb NOT NULL,
    reason       text NULL,
    occurred_at  timestamptz NOT NULL,
    published_at timestamptz NULL
)
"""


def ensure_outbox(settings: Settings) -> None:
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql.SQL(_CONTRACT).format(sql.Identifier(settings.db_schema)))


def system_events(settings: Settings, prefix: str = "") -> list[dict[str, Any]]:
    """The outbox's rows whose type starts with ``prefix``, in the order they were written."""
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        query = sql.SQL(
            "SELECT type, subject, flow_id, data, reason FROM {}.system_event_outbox"
            " WHERE type LIKE %s ORDER BY occurred_at, id"
        ).format(sql.Identifier(settings.db_schema))
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, (prefix + "%",)).fetchall()
