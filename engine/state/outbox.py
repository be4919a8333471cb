"""The system events outbox (state migration 006): ``object.action`` events written in the
transaction of the change they report, published later by the relay.

Writers call :func:`record_system_event` on the connection whose transaction makes the
change; the relay (``engine.runtime.outbox_relay``) claims pending rows with
:func:`claim_pending` and stamps them with :func:`mark_published` in one transaction of its
own; readers page the published ones with :func:`published_events`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from engine.ids import new_lead_id
from engine.state.errors import StateUnavailableError
from engine.state.postgres import Connection


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """One row of ``system_event_outbox``; ``data`` is the resource object at the event."""

    id: str
    type: str
    flow_id: str | None
    subject: str
    data: dict[str, Any]
    reason: str | None
    occurred_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The event as it is published and served: the catalogue's ``object.action`` shape."""
        return {
            "id": self.id,
            "type": self.type,
            "flow_id": self.flow_id,
            "subject": self.subject,
            "data": self.data,
            "reason": self.reason,
            "occurred_at": _iso(self.occurred_at),
        }


_SELECT = "SELECT id, type, flow_id, subject, data, reason, occurred_at FROM system_event_outbox"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_system_event(
    conn: Connection | psycopg.Cursor[Any],
    type_: str,
    *,
    subject: str,
    data: Mapping[str, Any],
    flow_id: str | None = None,
    reason: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> SystemEvent:
    """Insert a pending event; call inside the transaction that makes the change it reports
    (then the event exists if and only if the change committed).

    ``event_id``/``occurred_at``: for a writer that may record the same change again after a
    crash (an alert evaluator re-reading its input) and derives the id from the change; the
    second insert of an id is a no-op."""
    now = occurred_at or datetime.now(UTC)
    event = SystemEvent(
        # A ULID taken inside the change's transaction: a subject's changes are serialised
        # by the lock of the row they change, so its events' ids follow their commits.
        id=event_id or new_lead_id(int(now.timestamp() * 1000)),
        type=type_,
        flow_id=flow_id,
        subject=subject,
        data=dict(data),
        reason=reason,
        occurred_at=now,
    )
    conn.execute(
        "INSERT INTO system_event_outbox (id, type, flow_id, subject, data, reason, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (event.id, type_, flow_id, subject, Jsonb(event.data), reason, now),
    )
    return event


def claim_pending(conn: Connection, limit: int) -> list[SystemEvent]:
    """The oldest pending events, locked until the caller's transaction ends; call inside it."""
    rows = conn.execute(
        _SELECT + " WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE",
        (limit,),
    ).fetchall()
    return [SystemEvent(*row) for row in rows]


def mark_published(conn: Connection, ids: Sequence[str]) -> None:
    """Stamp ``ids`` published, numbering them in the order given (the order they went out)."""
    # One statement per row, in order: a sequence's values follow the order of the calls,
    # which a single joined UPDATE would not promise. Batches are small (the relay's limit).
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE system_event_outbox SET published_at = now(),"
            " published_seq = nextval('system_event_outbox_published_seq')"
            " WHERE id = %s AND published_at IS NULL",
            [(event_id,) for event_id in ids],
        )


class UnknownSystemEventError(LookupError):
    """``after_id`` names no published event."""


def published_events(
    conn: Connection,
    *,
    types: Sequence[str] = (),
    after_id: str | None = None,
    flows: frozenset[str] | None = None,
    limit: int = 100,
) -> list[SystemEvent]:
    """Published events in the order they were published, after the event ``after_id``,
    of ``types`` (any if empty) and of ``flows`` (any if None).
    ``StateUnavailableError`` if Postgres failed (a timeout included)."""
    try:
        return _published_events(conn, types, after_id, flows, limit)
    except psycopg.Error as exc:
        raise StateUnavailableError(f"system events unreadable: {exc}") from exc


def _published_events(
    conn: Connection,
    types: Sequence[str],
    after_id: str | None,
    flows: frozenset[str] | None,
    limit: int,
) -> list[SystemEvent]:
    after = 0
    if after_id is not None:
        row = conn.execute(
            "SELECT published_seq FROM system_event_outbox"
            " WHERE id = %s AND published_seq IS NOT NULL",
            (after_id,),
        ).fetchone()
        if row is None:
            raise UnknownSystemEventError(after_id)
        after = row[0]
    rows = conn.execute(
        _SELECT + " WHERE published_seq > %(after)s"
        " AND (cardinality(%(types)s::text[]) = 0 OR type = ANY(%(types)s))"
        " AND (%(all)s OR flow_id = ANY(%(flows)s))"
        " ORDER BY published_seq LIMIT %(limit)s",
        {
            "after": after,
            "types": list(types),
            "all": flows is None,
            "flows": sorted(flows or ()),
            "limit": limit,
        },
    ).fetchall()
    return [SystemEvent(*row) for row in rows]
