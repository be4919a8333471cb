"""The state's Postgres connection and its migrations (``engine/state/migrations/*.sql``).

Tables live in ``settings.db_schema``, prefixed ``engine_``; versions are
tracked in ``engine_state_migrations``, apart from the projection's, so each
side evolves on its own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from engine.errors import ConfigError
from engine.pgmigrate import MigrationChangedError, apply_migrations, load_migrations
from engine.settings import Settings
from engine.state.errors import StateMigrationError, StateUnavailableError
from engine.transport import postgres_tls

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]

# Lower case only: the schema goes unquoted into search_path (where Postgres
# folds case) and quoted into CREATE SCHEMA; both must name the same schema.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def checked_schema(schema: str) -> str:
    """``schema`` if it is a name the state tables can live in; ``ConfigError`` if not."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"db_schema {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def at_ms(ms: int) -> datetime:
    """An epoch-ms instant as the timestamptz Postgres stores."""
    return _EPOCH + timedelta(milliseconds=ms)


def connect(settings: Settings, *, statement_timeout_ms: int | None = None) -> Connection:
    """An autocommit connection to ``settings.db_schema``; callers open transactions."""
    schema = checked_schema(settings.db_schema)
    options = f"-c search_path={schema}"
    if statement_timeout_ms is not None:
        options += f" -c statement_timeout={statement_timeout_ms}"
    try:
        return psycopg.connect(
            settings.database_url.get_secret_value(),
            autocommit=True,
            application_name=f"leadflow-state/{schema}",  # who holds what, in pg_stat_activity
            connect_timeout=3,
            options=options,
            **postgres_tls(settings),
        )
    except psycopg.Error as exc:
        raise StateUnavailableError(f"state store unreachable: {exc}") from exc


def migrate_state(settings: Settings) -> list[str]:
    """Create ``settings.db_schema`` if needed and apply the state migrations it lacks.

    Idempotent and safe when several workers start at once: one transaction
    under the same advisory lock the projection's migrations take for this
    schema. Returns the versions applied.
    """
    schema = checked_schema(settings.db_schema)
    with connect(settings) as conn:
        try:
            with conn.transaction(), conn.cursor() as cur:
                done = apply_migrations(
                    cur, schema, "engine_state_migrations", load_migrations("engine.state")
                )
        except MigrationChangedError as exc:
            raise StateMigrationError(str(exc)) from None
        except psycopg.Error as exc:
            raise StateUnavailableError(f"state migrations failed: {exc}") from exc
    if done:
        log.info("state migrations applied", schema=schema, versions=done)
    return done
