"""The projections' Postgres side: connections, staging, the one-transaction batch write.

Driver errors that mean "Postgres is not there right now" become
``StoreUnavailableError`` here, so nothing above this module imports psycopg
to decide whether to retry.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from engine.errors import ConfigError
from engine.settings import Settings
from engine.transport import postgres_tls
from projectors.batch import EVENT_COLUMNS, Batch
from projectors.errors import StoreUnavailableError

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]

# Lower case only: the schema goes unquoted into search_path, where Postgres
# folds case, and quoted into CREATE SCHEMA; both must name the same schema.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn lost connections, restarts and other transient server errors into ours.

    psycopg's OperationalError covers a refused or dropped connection, an
    administrator shutdown and deadlocks: all worth a retry. Anything else
    (bad SQL, bad data) is a bug and propagates as it is.
    """
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailableError(f"postgres unavailable: {exc}") from exc


def checked_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"db_schema {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def connect(settings: Settings, *, application_name: str = "leadflow") -> Connection:
    """An autocommit connection whose search_path is ``settings.db_schema``.

    Autocommit so that read-only callers (CLI, demo polling) never sit idle in
    a transaction; writers open explicit ones with ``conn.transaction()``.
    """
    schema = checked_schema(settings.db_schema)
    with translate_errors():
        conn = psycopg.connect(
            settings.database_url.get_secret_value(),
            autocommit=True,
            application_name=application_name,
            connect_timeout=5,
            options=f"-c search_path={schema}",
            **postgres_tls(settings),
        )
    set_json_loads(orjson.loads, conn)
    return conn


# The API's pools, one per database and schema in this process (a test process serves many
# schemas): idle connections close after POOL_IDLE_S, so none linger for a schema no longer
# asked about.
_pools: dict[tuple[str, str, int], ConnectionPool[Connection]] = {}
_pools_lock = threading.Lock()
POOL_IDLE_S = 30.0
POOL_WAIT_S = 5.0


def _api_pool(settings: Settings) -> ConnectionPool[Connection]:
    schema = checked_schema(settings.db_schema)
    timeout = int(settings.api_statement_timeout_ms)
    key = (settings.database_url.get_secret_value(), schema, timeout)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                key[0],
                min_size=0,
                max_size=settings.api_pool_size,
                max_idle=POOL_IDLE_S,
                kwargs={
                    "autocommit": True,
                    "application_name": "leadflow-api",
                    "connect_timeout": 5,
                    # Every public query is cut off after the API's statement timeout.
                    "options": f"-c search_path={schema} -c statement_timeout={timeout}",
                    **postgres_tls(settings),
                },
                configure=lambda conn: set_json_loads(orjson.loads, conn),
                name=f"api-{schema}",
                open=True,
            )
            _pools[key] = pool
        return pool


@contextmanager
def api_connection(settings: Settings) -> Iterator[Connection]:
    """A connection from the process's API pool for one request: autocommit, the schema's
    search_path and the API's ``statement_timeout`` set once when it was opened; given back
    (or discarded, if broken) after the request. Unavailable Postgres is
    ``StoreUnavailableError`` (a 503), as for ``connect``."""
    pool = _api_pool(settings)
    try:
        conn = pool.getconn(timeout=POOL_WAIT_S)
    except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailableError(f"postgres unavailable: {exc}") from exc
    try:
        yield conn
    finally:
        pool.putconn(conn)


# -- the batch write ---------------------------------------------------------------------

_COLUMNS = [name for name, _ in EVENT_COLUMNS]
_COPY_TYPES = [pg_type for _, pg_type in EVENT_COLUMNS]

# Per session, emptied at every commit: the COPY target, since COPY itself
# cannot do ON CONFLICT. Named apart from ``events``, as pg_temp comes first in
# the search path.
_CREATE_STAGE = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS events_stage ({}) ON COMMIT DELETE ROWS"
).format(
    sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type))
        for name, pg_type in EVENT_COLUMNS
    )
)

_COPY_STAGE = sql.SQL("COPY events_stage ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
)


def stage_events(cur: psycopg.Cursor[Any], batch: Batch) -> None:
    """COPY the batch's event rows into the session's ``events_stage`` (emptied at commit)."""
    cur.execute(_CREATE_STAGE)
    # Empty already, unless an earlier batch of the same outer transaction
    # (a rebuild's final drain, written in savepoints) staged rows.
    cur.execute("DELETE FROM events_stage")
    with cur.copy(_COPY_STAGE) as copy:
        copy.set_types(_COPY_TYPES)
        for row in batch.events:
            copy.write_row(row)
