"""The state's Postgres connection and its migrations (``engine/state/migrations/*.sql``).

Tables live in ``settings.db_schema``, prefixed ``engine_``; versions are
tracked in ``engine_state_migrations``, apart from the projection's, so each
side evolves on its own.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
import structlog
from psycopg import sql

from engine.errors import ConfigError
from engine.settings import Settings
from engine.state.errors import StateMigrationError, StateUnavailableError

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
        )
    except psycopg.Error as exc:
        raise StateUnavailableError(f"state store unreachable: {exc}") from exc


def load_migrations() -> list[tuple[str, str]]:
    """(version, sql) of each file in ``engine/state/migrations``, in version order."""
    folder = resources.files("engine.state").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


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
                done = _apply_migrations(cur, schema)
        except psycopg.Error as exc:
            raise StateUnavailableError(f"state migrations failed: {exc}") from exc
    if done:
        log.info("state migrations applied", schema=schema, versions=done)
    return done


def _apply_migrations(cur: Cursor, schema: str) -> list[str]:
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"leadflow.migrate.{schema}",)
    )
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    cur.execute(
        "CREATE TABLE IF NOT EXISTS engine_state_migrations ("
        " version text PRIMARY KEY, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: dict[str, str] = dict(
        cur.execute("SELECT version, checksum FROM engine_state_migrations").fetchall()
    )
    done = []
    for version, text in load_migrations():
        checksum = hashlib.sha256(text.encode()).hexdigest()
        if version in applied:
            if applied[version] != checksum:
                raise StateMigrationError(
                    f"state migration {version} was changed after it was applied "
                    f"to schema {schema}; add a new migration instead"
                )
            continue
        cur.execute(text.encode())  # no parameters: psycopg sends it as one multi-statement query
        cur.execute(
            "INSERT INTO engine_state_migrations (version, checksum) VALUES (%s, %s)",
            (version, checksum),
        )
        done.append(version)
    return done
