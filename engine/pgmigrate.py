"""Versioned SQL migrations, shared by every part that owns tables (projections, engine state).

Each owner ships ``NNN_name.sql`` files and records what it applied in its
own bookkeeping table, inside the configured schema. Applying is idempotent
and safe when several processes start at once: one transaction under an
advisory lock per schema (the same lock for every owner, so their DDL never
interleaves). A file changed after it was applied is refused, not skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import Cursor, sql


class MigrationChangedError(ValueError):
    """An applied migration's file was edited afterwards."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file; ``version`` is its name without ``.sql``, e.g. ``001_events``."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str, folder: str = "migrations") -> list[Migration]:
    """The SQL files shipped in ``package/folder``, in version order."""
    root = resources.files(package).joinpath(folder)
    files = sorted((f for f in root.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def apply_migrations(
    cur: Cursor[Any], schema: str, table: str, migrations: Sequence[Migration]
) -> list[str]:
    """Apply what ``table`` does not list yet; call inside a transaction. Returns the versions."""
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"leadflow.migrate.{schema}",)
    )
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(table))
    )
    rows = cur.execute(sql.SQL("SELECT version, checksum FROM {}").format(sql.Identifier(table)))
    applied: dict[str, str] = dict(rows.fetchall())
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationChangedError(
                    f"migration {migration.version} was changed after it was applied to "
                    f"schema {schema}; add a new migration instead"
                )
            continue
        # No parameters: psycopg sends the file as one multi-statement query.
        cur.execute(migration.sql.encode())
        cur.execute(
            sql.SQL("INSERT INTO {} (version, checksum) VALUES (%s, %s)").format(
                sql.Identifier(table)
            ),
            (migration.version, migration.checksum),
        )
        done.append(migration.version)
    return done
