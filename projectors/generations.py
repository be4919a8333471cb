"""Blue/green generations: each projection's tables live in a schema per generation.

The configured schema (``settings.db_schema``) is the *serving* schema: it
holds ``projection_generations`` and, for each projection, views named like
its tables (``events``, ``leads``, ...) over the active generation. Readers
only ever name the views. A rebuild fills a new generation (its own schema,
its own checkpoints) while the active one keeps serving and keeps being
written, then ``switch`` retires the old one and re-points the views in one
transaction, so a query sees one generation or the other, never a mix.

Writers guard every batch with ``guard``: a share lock on their generation's
row, in the state they expect. The switch takes that row for update, so it
waits for batches in flight and, once committed, makes every later batch of
the old generation fail its guard (``GenerationChangedError``): the live
projector then moves to the new generation and resumes from its checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from psycopg import Cursor, sql

from engine.access.store import apply_access_migrations
from engine.pgmigrate import MigrationChangedError, apply_migrations, load_migrations
from engine.settings import Settings
from projectors.errors import MigrationError
from projectors.projection import Projection
from projectors.projections import NAMES, projection
from projectors.store import Connection, checked_schema, connect, translate_errors

log = structlog.get_logger(__name__)

State = Literal["building", "active", "retired"]

# The tables of the layout before generations existed, all in the serving
# schema; ``prepare`` moves them into generation 1 of the timeline.
_LEGACY_TABLES = (
    "events",
    "leads",
    "projector_checkpoints",
    "projector_rejects",
    "schema_migrations",
)


class GenerationChangedError(Exception):
    """The generation a writer targets is no longer in the state it expected."""


@dataclass(frozen=True, slots=True)
class Generation:
    serving: str
    projection: str
    number: int
    schema: str
    state: State
    started_from: datetime | None
    created_at: datetime
    activated_at: datetime | None


_SELECT = sql.SQL(
    "SELECT projection, generation, schema_name, state, started_from, created_at, activated_at"
    " FROM {}.projection_generations"
)


def _select(
    cur: Cursor[Any], serving: str, where: str, params: Sequence[Any], lock: str = ""
) -> list[Generation]:
    query = sql.SQL("{} WHERE {} ORDER BY projection, generation {}").format(
        _SELECT.format(sql.Identifier(serving)), sql.SQL(where), sql.SQL(lock)
    )
    return [Generation(serving, *row) for row in cur.execute(query, params).fetchall()]


def generation_schema(serving: str, name: str, number: int) -> str:
    return checked_schema(f"{serving}_{name}_{number}")


# -- set up and migrate -----------------------------------------------------------------


def migrate(conn: Connection, serving: str) -> list[str]:
    """Make ``serving`` ready: its own migrations, an active generation of every projection,
    every live generation (active or building) migrated, and the API's key store and read
    audit (``engine.access``). Returns what was applied.

    Idempotent and safe when several processes start at once: one transaction
    under the serving schema's migration lock (``engine.pgmigrate``).
    """
    serving = checked_schema(serving)
    done: list[str] = []
    try:
        with translate_errors(), conn.transaction(), conn.cursor() as cur:
            done += apply_migrations(
                cur,
                serving,
                "projection_migrations",
                load_migrations("projectors", "migrations/serving"),
            )
            for name in NAMES:
                done += _prepare(cur, serving, projection(name))
            # The API's key store and read audit live beside the views it reads.
            done += apply_access_migrations(cur, serving)
    except MigrationChangedError as exc:
        raise MigrationError(str(exc)) from None
    if done:
        log.info("migrations applied", schema=serving, versions=done)
    return done


def migrate_database(settings: Settings) -> list[str]:
    """``migrate`` on ``settings.db_schema`` with a connection of its own (CLI, demo, workers)."""
    with connect(settings, application_name="leadflow-migrate") as conn:
        return migrate(conn, settings.db_schema)


def _prepare(cur: Cursor[Any], serving: str, p: Projection) -> list[str]:
    done: list[str] = []
    live = _select(cur, serving, "projection = %s AND state <> 'retired'", (p.name,))
    if not any(g.state == "active" for g in live):
        if p.name == "timeline" and _has_legacy_tables(cur, serving):
            live.append(_adopt_legacy(cur, serving, p))
            done.append(f"{serving}: legacy tables moved to generation 1 of {p.name}")
        else:
            live.append(_insert(cur, serving, p, "active", None))
    for generation in live:
        applied = apply_migrations(cur, generation.schema, "schema_migrations", p.migrations())
        done += [f"{generation.schema}.{version}" for version in applied]
        if generation.state == "active" and (applied or not _views_exist(cur, serving, p)):
            _point_views(cur, serving, p, generation.schema)
    return done


def _insert(
    cur: Cursor[Any], serving: str, p: Projection, state: State, started_from: datetime | None
) -> Generation:
    row = cur.execute(
        sql.SQL(
            "SELECT coalesce(max(generation), 0) + 1 FROM {}.projection_generations"
            " WHERE projection = %s"
        ).format(sql.Identifier(serving)),
        (p.name,),
    ).fetchone()
    number = int(row[0]) if row else 1
    schema = generation_schema(serving, p.name, number)
    # A schema left by a generation whose row was deleted by hand holds nothing we want.
    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    cur.execute(
        sql.SQL(
            "INSERT INTO {}.projection_generations"
            " (projection, generation, schema_name, state, started_from, activated_at)"
            " VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'active' THEN now() END)"
        ).format(sql.Identifier(serving)),
        (p.name, number, schema, state, started_from, state),
    )
    log.info("generation created", projection=p.name, generation=number, state=state)
    return _select(cur, serving, "schema_name = %s", (schema,))[0]


def _has_legacy_tables(cur: Cursor[Any], serving: str) -> bool:
    row = cur.execute(
        "SELECT c.relkind = 'r' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'events'",
        (serving,),
    ).fetchone()
    return bool(row and row[0])


def _adopt_legacy(cur: Cursor[Any], serving: str, p: Projection) -> Generation:
    generation = _insert(cur, serving, p, "active", None)
    for table in _LEGACY_TABLES:
        cur.execute(
            sql.SQL("ALTER TABLE IF EXISTS {}.{} SET SCHEMA {}").format(
                sql.Identifier(serving), sql.Identifier(table), sql.Identifier(generation.schema)
            )
        )
    return generation


def _views_exist(cur: Cursor[Any], serving: str, p: Projection) -> bool:
    row = cur.execute(
        "SELECT count(*) FROM information_schema.views WHERE table_schema = %s"
        " AND table_name = ANY(%s)",
        (serving, list(p.views)),
    ).fetchone()
    return bool(row and row[0] == len(p.views))


def _point_views(cur: Cursor[Any], serving: str, p: Projection, schema: str) -> None:
    for view in p.views:
        name = sql.Identifier(serving, view)
        cur.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(name))
        cur.execute(
            sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(name, sql.Identifier(schema, view))
        )


# -- reading ------------------------------------------------------------------------------


def generations(conn: Connection, serving: str, name: str | None = None) -> list[Generation]:
    """Every generation, or every generation of projection ``name``, oldest first."""
    where, params = ("projection = %s", (name,)) if name else ("true", ())
    with translate_errors(), conn.cursor() as cur:
        return _select(cur, checked_schema(serving), where, params)


def current(conn: Connection, serving: str, name: str, state: State) -> Generation | None:
    """The active (or building) generation of ``name``; there is at most one of each."""
    return next((g for g in generations(conn, serving, name) if g.state == state), None)


# -- writing and switching ----------------------------------------------------------------


def guard(cur: Cursor[Any], generation: Generation) -> None:
    """Share-lock ``generation``'s row until the transaction ends, if it is still in its state.

    Raises ``GenerationChangedError`` when a switch has moved it on; a switch
    running right now is waited for first.
    """
    row = cur.execute(
        sql.SQL(
            "SELECT 1 FROM {}.projection_generations WHERE schema_name = %s AND state = %s"
            " FOR SHARE"
        ).format(sql.Identifier(generation.serving)),
        (generation.schema, generation.state),
    ).fetchone()
    if row is None:
        raise GenerationChangedError(
            f"generation {generation.number} of {generation.projection} is no longer "
            f"{generation.state}"
        )


def create_building(
    conn: Connection, serving: str, name: str, started_from: datetime | None
) -> Generation:
    """A new, empty, migrated generation of ``name`` to rebuild into."""
    p = projection(name)
    with translate_errors(), conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"leadflow.migrate.{serving}",),
        )
        generation = _insert(cur, serving, p, "building", started_from)
        apply_migrations(cur, generation.schema, "schema_migrations", p.migrations())
    return generation


def lock_active(cur: Cursor[Any], serving: str, name: str) -> Generation | None:
    """Take the active generation's row for update: live writers wait until the transaction ends."""
    found = _select(cur, serving, "projection = %s AND state = 'active'", (name,), "FOR UPDATE")
    return found[0] if found else None


def switch(cur: Cursor[Any], building: Generation, active: Generation | None) -> Generation:
    """Retire ``active``, activate ``building`` and re-point the views; inside the caller's
    transaction, which must hold ``lock_active``."""
    serving = sql.Identifier(building.serving)
    if active is not None:
        cur.execute(
            sql.SQL(
                "UPDATE {}.projection_generations SET state = 'retired', retired_at = now()"
                " WHERE schema_name = %s"
            ).format(serving),
            (active.schema,),
        )
    cur.execute(
        sql.SQL(
            "UPDATE {}.projection_generations SET state = 'active', activated_at = now()"
            " WHERE schema_name = %s AND state = 'building'"
        ).format(serving),
        (building.schema,),
    )
    _point_views(cur, building.serving, projection(building.projection), building.schema)
    log.info(
        "generation switched",
        projection=building.projection,
        active=building.number,
        retired=active.number if active else None,
    )
    return _select(cur, building.serving, "schema_name = %s", (building.schema,))[0]


def drop(conn: Connection, generation: Generation) -> None:
    """Drop a retired or building generation's schema and forget it; the active one is refused.

    The state is read again under the row's lock, not taken from ``generation``: a
    rebuild may have switched the generation in since the caller read it.
    """
    with translate_errors(), conn.transaction(), conn.cursor() as cur:
        row = cur.execute(
            sql.SQL(
                "SELECT state FROM {}.projection_generations WHERE schema_name = %s FOR UPDATE"
            ).format(sql.Identifier(generation.serving)),
            (generation.schema,),
        ).fetchone()
        if row is not None and row[0] == "active":
            raise ValueError(
                f"generation {generation.number} of {generation.projection} is active; "
                "rebuild (leadflow replay) to replace it first"
            )
        cur.execute(
            sql.SQL("DELETE FROM {}.projection_generations WHERE schema_name = %s").format(
                sql.Identifier(generation.serving)
            ),
            (generation.schema,),
        )
        cur.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(generation.schema))
        )
    log.info("generation dropped", projection=generation.projection, generation=generation.number)
