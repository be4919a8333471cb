"""Read an export's events in constant memory: one server-side cursor, fetched in chunks.

Rows come ordered by event id - submission time, then lead, then position in
the flow, so each lead's events sit together in timeline order - ascending
unless ``sort=desc``, and from one snapshot: the export is the projection as of
its first row, whatever arrives while it streams. The read-only transaction
stays open for the whole export.

``after_id``/``before_id`` bound the export by event id in that order (not by
``GET /events``' insertion order: an export is a snapshot, not a feed to follow),
and like ``/events`` they must name stored events; ``limit`` caps the rows.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from psycopg import sql

from engine.state.keys import reveal_sealed
from projectors.exports.formats import FORMATS, Format
from projectors.search import UnknownCursorError, event_filters
from projectors.selection import ExportQuery
from projectors.store import Connection, translate_errors

# Rows per fetch from the server and per encoded chunk: a few MB of JSON at most.
CHUNK_ROWS = 1000


def where_clause(query: ExportQuery) -> tuple[sql.Composable, list[Any]]:
    """The SQL condition selecting ``query``'s events, and its parameters."""
    clauses, params = event_filters(
        flow_id=query.flow_id,
        lead_id=query.lead_id,
        outcome=query.outcome,
        step_id=query.step_id,
        start=query.start,
        end=query.end,
        types=query.type,
        ids=query.id,
        reason=query.reason,
        min_ms=query.min_ms,
    )
    for bound, op in ((query.after_id, ">"), (query.before_id, "<")):
        if bound is not None:
            clauses.append(sql.SQL("id {} %s").format(sql.SQL(op)))
            params.append(bound)
    clauses.insert(0, sql.SQL("true"))
    return sql.SQL(" AND ").join(clauses), params


def check_cursors(conn: Connection, query: ExportQuery) -> None:
    """``UnknownCursorError`` when ``after_id`` or ``before_id`` names no stored event, as
    ``GET /events`` answers: a mistyped id would otherwise silently bound the export."""
    wanted = {p: v for p, v in (("after_id", query.after_id), ("before_id", query.before_id)) if v}
    if not wanted:
        return
    with translate_errors():
        rows = conn.execute(
            "SELECT id FROM events WHERE id = ANY(%s)", (list(wanted.values()),)
        ).fetchall()
    found = {event_id for (event_id,) in rows}
    for param, event_id in wanted.items():
        if event_id not in found:
            raise UnknownCursorError(param, event_id)


class ExportStream:
    """The export file's bytes, chunk by chunk; ``rows`` counts the events sent so far.

    The query runs when the stream is created, so an unavailable database, a
    bad query or an unknown cursor (``UnknownCursorError``) fails there, before
    an HTTP answer has committed to a status.
    ``conn`` (from ``projectors.store.connect``, autocommit) must stay open and
    unused by anyone else until the stream is exhausted or closed.
    """

    def __init__(
        self,
        conn: Connection,
        query: ExportQuery,
        chunk_rows: int = CHUNK_ROWS,
        *,
        clear_text: bool = True,
    ) -> None:
        self.format: Format = FORMATS[query.format]
        self.clear_text = clear_text  # False: lead data masked (engine.masking)
        self.rows = 0
        generator = self._generate(conn, query, chunk_rows)
        with translate_errors():
            first = next(generator)
        self._chunks = itertools.chain([first], generator)
        self._generator = generator

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with translate_errors():
            return next(self._chunks)

    def close(self) -> None:
        """Stop early: ends the transaction and frees the server-side cursor."""
        self._generator.close()

    def _generate(
        self, conn: Connection, query: ExportQuery, chunk_rows: int
    ) -> Generator[bytes, None, None]:
        check_cursors(conn, query)
        where, params = where_clause(query)
        statement = sql.SQL("SELECT {} FROM events WHERE {} ORDER BY id {}").format(
            self.format.select, where, sql.SQL("DESC" if query.sort == "desc" else "ASC")
        )
        if query.limit is not None:
            statement = sql.SQL("{} LIMIT %s").format(statement)
            params.append(query.limit)
        # A server-side cursor lives in a transaction; without one, psycopg would
        # pull the whole result into memory.
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            with conn.cursor(name=f"leadflow_export_{uuid.uuid4().hex}") as cursor:
                cursor.execute(statement, params)
                yield self.format.header()
                clear = self.clear_text

                def opener(value: Any) -> Any:
                    return reveal_sealed(conn, value, sees_pii=clear)

                while rows := cursor.fetchmany(chunk_rows):
                    self.rows += len(rows)
                    yield self.format.encode(rows, clear_text=clear, opener=opener)
