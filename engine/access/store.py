"""API keys in Postgres (``engine_api_keys``) and the audit of clear-text reads.

Keys are created, listed, rotated and revoked here (``leadflow keys``); the guard
reads one key by id per lookup, so a change takes effect at the next lookup of
any API process, without a restart.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg import sql

from engine.access.keys import digest, new_key
from engine.access.scopes import Principal, parse_scopes
from engine.errors import LeadflowError
from engine.pgmigrate import apply_migrations, load_migrations
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import checked_schema, connect

log = structlog.get_logger(__name__)


class UnknownKeyError(LeadflowError):
    """No such key, or it is already revoked."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's row, without its digest."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    flows: tuple[str, ...] | None
    rate_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "flows": list(self.flows) if self.flows is not None else None,
            "rate_per_minute": self.rate_per_minute,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


_migrated: set[str] = set()
_migrating = threading.Lock()


def apply_access_migrations(cur: psycopg.Cursor[Any], schema: str) -> list[str]:
    """The key store's migrations on an open cursor (in the caller's transaction): the
    projections' ``migrate`` applies them too, so every schema the API reads from has the
    audit table its reads are recorded in."""
    return apply_migrations(
        cur, checked_schema(schema), "engine_access_migrations", load_migrations("engine.access")
    )


def migrate_access(settings: Settings) -> list[str]:
    """Apply the key store's migrations (idempotent); once per process and schema after that."""
    schema = checked_schema(settings.db_schema)
    with _migrating:
        if schema in _migrated:
            return []
        try:
            with connect(settings) as conn, conn.transaction(), conn.cursor() as cur:
                done = apply_access_migrations(cur, schema)
        except psycopg.Error as exc:
            raise StateUnavailableError(f"key store migrations failed: {exc}") from exc
        _migrated.add(schema)
    return done


_COLUMNS = sql.SQL("key_id, name, scopes, flows, rate_per_minute, created_at, revoked_at")


def _stored(row: tuple[Any, ...]) -> StoredKey:
    flows = tuple(row[3]) if row[3] is not None else None
    return StoredKey(row[0], row[1], tuple(row[2]), flows, row[4], row[5], row[6])


def create_key(
    settings: Settings,
    name: str,
    scopes: Iterable[str],
    flows: Iterable[str] | None = None,
    rate_per_minute: int | None = None,
) -> tuple[StoredKey, str]:
    """A new key and its plaintext, which is not kept anywhere: show it once."""
    scopes = tuple(sorted(parse_scopes(scopes)))  # a bad scope is refused before any write
    migrate_access(settings)
    key_id, key = new_key()
    pepper = settings.api_key_pepper.get_secret_value()
    with connect(settings) as conn:
        row = conn.execute(
            sql.SQL(
                "INSERT INTO engine_api_keys (key_id, name, digest, scopes, flows, rate_per_minute)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING {}"
            ).format(_COLUMNS),
            (
                key_id,
                name,
                digest(pepper, key),
                list(scopes),
                list(flows) if flows is not None else None,
                rate_per_minute,
            ),
        ).fetchone()
    assert row is not None
    log.info("api key created", key_id=key_id, key_name=name, scopes=list(scopes))
    return _stored(row), key


def list_keys(settings: Settings, *, revoked: bool = False) -> list[StoredKey]:
    migrate_access(settings)
    where = sql.SQL("" if revoked else " WHERE revoked_at IS NULL")
    with connect(settings) as conn:
        rows = conn.execute(
            sql.SQL("SELECT {} FROM engine_api_keys{} ORDER BY created_at, key_id").format(
                _COLUMNS, where
            )
        ).fetchall()
    return [_stored(r) for r in rows]


def revoke_key(settings: Settings, key_id: str) -> StoredKey:
    migrate_access(settings)
    with connect(settings) as conn:
        row = conn.execute(
            sql.SQL(
                "UPDATE engine_api_keys SET revoked_at = now()"
                " WHERE key_id = %s AND revoked_at IS NULL RETURNING {}"
            ).format(_COLUMNS),
            (key_id,),
        ).fetchone()
    if row is None:
        raise UnknownKeyError(f"No active key {key_id}")
    log.info("api key revoked", key_id=key_id)
    return _stored(row)


def rotate_key(settings: Settings, key_id: str) -> tuple[StoredKey, str]:
    """A new key with the old one's name, scopes and flows; the old one is revoked at once."""
    migrate_access(settings)
    with connect(settings) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT {} FROM engine_api_keys WHERE key_id = %s AND revoked_at IS NULL"
            ).format(_COLUMNS),
            (key_id,),
        ).fetchone()
    if row is None:
        raise UnknownKeyError(f"No active key {key_id}")
    old = _stored(row)
    new, key = create_key(settings, old.name, old.scopes, old.flows, old.rate_per_minute)
    with connect(settings) as conn:
        conn.execute(
            "UPDATE engine_api_keys SET revoked_at = now(), replaced_by = %s WHERE key_id = %s",
            (new.key_id, key_id),
        )
    log.info("api key rotated", key_id=key_id, replaced_by=new.key_id)
    return new, key


def find_principal(settings: Settings, key_id: str, key: str) -> Principal | None:
    """The principal of ``key`` if it is an active stored key, else None."""
    migrate_access(settings)
    with connect(settings, statement_timeout_ms=2000) as conn:
        row = conn.execute(
            "SELECT name, digest, scopes, flows, rate_per_minute FROM engine_api_keys"
            " WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        ).fetchone()
    wanted = digest(settings.api_key_pepper.get_secret_value(), key)
    if row is None or not hmac.compare_digest(bytes(row[1]), wanted):
        return None
    return Principal(
        key_id=key_id,
        name=row[0],
        scopes=parse_scopes(row[2]),
        flows=frozenset(row[3]) if row[3] is not None else None,
        rate_per_minute=row[4],
    )


def record_pii_read(
    conn: psycopg.Connection[Any], key_id: str, route: str, lead_ids: Iterable[str]
) -> None:
    """One audit row: ``key_id`` read these leads in clear text through ``route``.
    ``conn`` is the route's own connection (autocommit), so the row needs no second one."""
    conn.execute(
        "INSERT INTO engine_pii_reads (key_id, route, lead_ids) VALUES (%s, %s, %s)",
        (key_id, route, sorted(set(lead_ids))),
    )
