"""The system events outbox (state migration 006) read back by type, for tests of code that
writes system events."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.settings import Settings
from engine.state.postgres import migrate_state


def ensure_outbox(settings: Settings) -> None:
    """The state tables of ``settings``' schema, the outbox among them."""
    migrate_state(settings)


def system_events(settings: Settings, prefix: str = "") -> list[dict[str, Any]]:
    """The outbox's rows whose type starts with ``prefix``, in the order they were written."""
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        query = sql.SQL(
            "SELECT type, subject, flow_id, data, reason FROM {}.system_event_outbox"
            " WHERE type LIKE %s ORDER BY occurred_at, id"
        ).format(sql.Identifier(settings.db_schema))
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, (prefix + "%",)).fetchall()
