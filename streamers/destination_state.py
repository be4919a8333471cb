"""Each destination's lifecycle state in Postgres, where every process sees the same answer.

One row per (flow, destination key) in ``settings.db_schema`` (table
``streamer_destinations``, migrations in ``streamers/migrations``, versions in
``streamer_migrations`` so they evolve apart from the engine's and the
projections'). A transition is a compare-and-set in one transaction, so a
streamer deactivating a destination and a user enabling it at the same moment
cannot both win silently: each sees the state the other left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
import structlog

from engine.pgmigrate import MigrationChangedError, apply_migrations, load_migrations
from engine.settings import Settings
from engine.state.errors import StateMigrationError, StateUnavailableError
from engine.state.postgres import Connection, checked_schema, connect

log = structlog.get_logger(__name__)

State = Literal["active", "deactivated", "disabled"]
MIGRATIONS_TABLE = "streamer_migrations"

_migrated: set[tuple[str, str]] = set()

_SELECT = (
    "SELECT flow_id, destination, name, state, reason, changed_at, verified_at,"
    " last_object_key, last_object_at, last_error, last_error_at FROM streamer_destinations"
)


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One row: the lifecycle state, why, and the destination's last object and error."""

    flow_id: str
    destination: str
    name: str
    state: State
    reason: str | None
    changed_at: datetime
    verified_at: datetime | None
    last_object_key: str | None
    last_object_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


def migrate_destination_state(settings: Settings) -> list[str]:
    """Apply the table's migrations (idempotent; once per process and schema)."""
    schema = checked_schema(settings.db_schema)
    marker = (settings.database_url.get_secret_value(), schema)
    if marker in _migrated:
        return []
    with connect(settings) as conn:
        try:
            with conn.transaction(), conn.cursor() as cur:
                done = apply_migrations(cur, schema, MIGRATIONS_TABLE, load_migrations("streamers"))
        except MigrationChangedError as exc:
            raise StateMigrationError(str(exc)) from None
        except psycopg.Error as exc:
            raise StateUnavailableError(f"streamer state migrations failed: {exc}") from exc
    _migrated.add(marker)
    if done:
        log.info("streamer state migrations applied", schema=schema, versions=done)
    return done


def open_state(settings: Settings) -> Connection:
    """A connection to the state table, migrated first."""
    migrate_destination_state(settings)
    return connect(settings, statement_timeout_ms=5_000)


def read_state(conn: Connection, flow_id: str, destination: str) -> DestinationState | None:
    row = conn.execute(
        _SELECT + " WHERE flow_id = %s AND destination = %s",
        (flow_id, destination),
    ).fetchone()
    return DestinationState(*row) if row else None


def read_states(conn: Connection, flow_id: str | None = None) -> list[DestinationState]:
    """Every destination's row (of one flow, if given), by flow and key."""
    rows = conn.execute(
        _SELECT
        + " WHERE %(flow)s::text IS NULL OR flow_id = %(flow)s ORDER BY flow_id, destination",
        {"flow": flow_id},
    ).fetchall()
    return [DestinationState(*row) for row in rows]


def transition(
    conn: Connection,
    flow_id: str,
    destination: str,
    name: str,
    to: State,
    reason: str,
    *,
    allowed_from: frozenset[State | None],
    verified: bool = False,
) -> State | Literal["refused"] | None:
    """Move the destination to ``to`` if its current state (None: no row) is in
    ``allowed_from``; returns that previous state, or ``"refused"``.

    A row already in ``to`` is still updated (reason, ``verified_at``): callers
    decide from the previous state whether this was a change worth an event.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM streamer_destinations"
            " WHERE flow_id = %s AND destination = %s FOR UPDATE",
            (flow_id, destination),
        ).fetchone()
        previous: State | None = row[0] if row else None
        if previous not in allowed_from:
            return "refused"
        conn.execute(
            "INSERT INTO streamer_destinations AS d"
            " (flow_id, destination, name, state, reason, verified_at)"
            " VALUES (%(flow)s, %(dest)s, %(name)s, %(to)s, %(reason)s,"
            "         CASE WHEN %(verified)s THEN now() END)"
            " ON CONFLICT (flow_id, destination) DO UPDATE SET"
            "  name = EXCLUDED.name, state = EXCLUDED.state, reason = EXCLUDED.reason,"
            "  changed_at = CASE WHEN d.state = EXCLUDED.state THEN d.changed_at ELSE now() END,"
            "  verified_at = COALESCE(EXCLUDED.verified_at, d.verified_at)",
            {"flow": flow_id, "dest": destination, "name": name, "to": to, "reason": reason,
             "verified": verified},
        )  # fmt: skip
    return previous


def record_activity(
    conn: Connection,
    flow_id: str,
    destination: str,
    *,
    last_object: tuple[str, datetime] | None,
    last_error: tuple[str, datetime] | None,
) -> None:
    """Store the newest object written and error seen; a None leaves that column as it was."""
    obj_key, obj_at = last_object or (None, None)
    error, error_at = last_error or (None, None)
    conn.execute(
        "UPDATE streamer_destinations SET"
        " last_object_key = COALESCE(%(key)s, last_object_key),"
        " last_object_at = COALESCE(%(key_at)s, last_object_at),"
        " last_error = COALESCE(%(error)s, last_error),"
        " last_error_at = COALESCE(%(error_at)s, last_error_at)"
        " WHERE flow_id = %(flow)s AND destination = %(dest)s",
        {"key": obj_key, "key_at": obj_at, "error": error, "error_at": error_at,
         "flow": flow_id, "dest": destination},
    )  # fmt: skip
