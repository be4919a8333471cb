"""The operator UI's reads of the timeline projection: find, browse and page a lead's events.

Every query is bounded (a ``LIMIT`` and keyset cursors, never an offset) and
walks an index the projection already has: ``events (lead_id, id)`` for a
lead, ``events (flow_id, type, ts, id)`` for browsing a flow by event type (timeline
migration 005: a rare type reads its own entries, not every event back to a page's
worth of it), ``events (flow_id, id)`` to list flows. Email and phone search
read ``source.accepted`` snapshots (where the values are normalised) on the
partial indexes of timeline migration 004, and the person index's keyed hashes for
leads whose flow seals them (``engine.state.keys.search_person``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from engine.ids import id_timestamp_ms, is_valid_id
from engine.state.errors import StateUnavailableError
from engine.state.keys import erased_among, search_person
from projectors.errors import StoreUnavailableError
from projectors.params import iso_utc
from projectors.store import Connection, translate_errors

_LEAD_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$", re.I)
_PHONE_FIELDS = ("lead.phone_1", "lead.phone_2", "lead.phone_3", "lead.phone")
MAX_FOUND = 50

# Who the lead is, from one event's snapshot: enough to recognise it in a list.
_IDENTITY = """
    e.snapshot #>> '{vars,lead.first_name}' AS first_name,
    e.snapshot #>> '{vars,lead.last_name}' AS last_name,
    e.snapshot #>> '{vars,lead.email}' AS email,
    e.snapshot #>> '{vars,lead.phone_1}' AS phone
"""


@dataclass(frozen=True, slots=True)
class LeadFilter:
    """Browse a flow: events of ``type`` (with ``outcome``), newest first, before ``before_id``."""

    flow_id: str
    type: str = "source.submitted"
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    before_id: str | None = None
    limit: int = 50


def _rows(conn: Connection, query: sql.Composed | str, params: Any) -> list[dict[str, Any]]:
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [
            {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
            for row in cur.fetchall()
        ]


def classify(q: str) -> tuple[str, str]:
    """What a search box holds: ``("lead_id"|"email"|"phone"|"unknown", normalised value)``.

    Emails are compared lower-cased and phones as 10 digits, as the source step
    stores them (``engine.fields``).
    """
    text = q.strip()
    if _LEAD_ID.match(text):
        return "lead_id", text.upper()
    if "@" in text:
        return "email", text.lower()
    digits = re.sub(r"\D", "", text)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10 and re.fullmatch(r"[\d\s().+-]+", text):
        return "phone", digits
    return "unknown", text


def find_leads(conn: Connection, q: str, flow_id: str | None = None) -> list[dict[str, Any]]:
    """Leads by id, email or phone (exact, normalised), newest first, at most ``MAX_FOUND``.

    An email or phone is looked for twice: in the clear snapshots, and through the person
    index's keyed hash (``engine.state.keys.search_person``), which is the only way to find
    a lead whose flow seals that field (its rows hold ciphertext). Erased leads are found by
    neither: their index rows may outlive the key for a moment, and a flow that does not
    seal keeps the clear values until the erasure overwrites them. By id a lead is always
    found, erased or not (its page shows ``[erased]``)."""
    kind, value = classify(q)
    if kind == "unknown":
        return []
    found = [value] if kind == "lead_id" else _person_leads(conn, kind, value, flow_id)
    query = sql.SQL(
        "SELECT l.lead_id, l.flow_id, l.status, l.last_event_type, l.submitted_at, l.updated_at,"
        " l.completed, l.cost, l.revenue, {identity}"
        " FROM unnest(%(ids)s::text[]) AS found(lead_id) JOIN leads l USING (lead_id)"
        " LEFT JOIN events e ON e.id = l.last_event_id"
        " ORDER BY l.submitted_at DESC, l.lead_id LIMIT %(cap)s"
    ).format(identity=sql.SQL(_IDENTITY))
    return _rows(conn, query, {"ids": found, "cap": MAX_FOUND})


def _person_leads(conn: Connection, kind: str, value: str, flow_id: str | None) -> list[str]:
    """The ids of the leads of an email or phone: clear snapshots, then the keyed hash."""
    # The expressions of the timeline's partial indexes (004_lead_identity_indexes.sql).
    matches = sql.SQL(
        "snapshot #>> '{vars,lead.email}' = %(v)s"
        if kind == "email"
        else "ARRAY["
        + ", ".join(f"snapshot #>> '{{vars,{f}}}'" for f in _PHONE_FIELDS)
        + "] @> ARRAY[%(v)s::text]"
    )
    clear = sql.SQL(
        "SELECT DISTINCT lead_id FROM events WHERE type = 'source.accepted'"
        " AND ({}) AND (%(flow)s::text IS NULL OR flow_id = %(flow)s) LIMIT %(cap)s"
    ).format(matches)
    rows = _rows(conn, clear, {"v": value, "flow": flow_id, "cap": MAX_FOUND})
    in_clear = [str(r["lead_id"]) for r in rows]
    try:
        sealed = search_person(conn, kind, value, flow_id, MAX_FOUND)
        erased = erased_among(conn, in_clear)
    except StateUnavailableError as exc:  # the route's 503, as for the timeline's own reads
        raise StoreUnavailableError(str(exc)) from exc
    return [i for i in in_clear if i not in erased] + [i for i in sealed if i not in in_clear]


def browse_leads(conn: Connection, f: LeadFilter) -> list[dict[str, Any]]:
    """One page of a flow's events of ``f.type``, each with its lead's current state."""
    query = sql.SQL(
        "SELECT e.id AS event_id, e.lead_id, e.type, e.outcome, e.reason, e.ts AS timestamp,"
        " l.status, l.last_event_type, l.completed, {identity}"
        " FROM events e JOIN leads l USING (lead_id)"
        " WHERE e.flow_id = %(flow)s AND e.type = %(type)s"
        " AND (%(outcome)s::text IS NULL OR e.outcome = %(outcome)s)"
        " AND (%(start)s::timestamptz IS NULL OR e.ts >= %(start)s)"
        " AND (%(end)s::timestamptz IS NULL OR e.ts < %(end)s)"
        " AND (%(before)s::text IS NULL"
        "      OR (e.ts, e.id) < (SELECT ts, id FROM events WHERE id = %(before)s))"
        " ORDER BY e.ts DESC, e.id DESC LIMIT %(limit)s"
    ).format(identity=sql.SQL(_IDENTITY))
    params = {
        "flow": f.flow_id,
        "type": f.type,
        "outcome": f.outcome,
        "start": f.start,
        "end": f.end,
        "before": f.before_id,
        "limit": f.limit,
    }
    return _rows(conn, query, params)


def lead_summary(conn: Connection, lead_id: str) -> dict[str, Any] | None:
    rows = _rows(
        conn,
        sql.SQL(
            "SELECT l.*, {identity} FROM leads l LEFT JOIN events e ON e.id = l.last_event_id"
            " WHERE l.lead_id = %(lead)s"
        ).format(identity=sql.SQL(_IDENTITY)),
        {"lead": lead_id},
    )
    return rows[0] if rows else None


def timeline_page(
    conn: Connection, lead_id: str, after_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """A page of the lead's events in time order (feedback and retries where they happened),
    each with ``gap_ms`` since the one before it; ``limit + 1`` rows tell there is more."""
    query = """
        SELECT * FROM (
            SELECT id, type, outcome, reason, step_id, step_name, entity_id, ts AS timestamp,
                   ms, wait_ms, cost, revenue,
                   (snapshot ->> 'attempt')::int AS attempt,
                   snapshot ->> 'retry_status' AS retry_status,
                   end_timestamp - lag(end_timestamp) OVER (ORDER BY ts, id) AS gap_ms,
                   ts AS sort_ts
            FROM events WHERE lead_id = %(lead)s
        ) t
        WHERE %(after)s::text IS NULL
           OR (sort_ts, id) > (SELECT ts, id FROM events WHERE id = %(after)s)
        ORDER BY sort_ts, id LIMIT %(limit)s
    """
    rows = _rows(conn, query, {"lead": lead_id, "after": after_id, "limit": limit + 1})
    for row in rows:
        del row["sort_ts"]
    return rows


def neighbour_before(conn: Connection, event_id: str) -> str | None:
    """The id of the lead's event just before ``event_id`` in time order, for a default diff.

    ``events`` is partitioned by day: each lookup carries a lower bound on ``ts`` from an id
    (an event happens after the time in its id, a lead's events after its submission, the
    time in the lead's id; a day earlier for clocks that disagree), so the planner reads the
    few partitions a timeline spans instead of probing every day kept."""
    found = _rows(
        conn,
        "SELECT lead_id, ts FROM events WHERE id = %(id)s AND ts >= %(from)s",
        {"id": event_id, "from": _not_before(event_id)},
    )
    if not found:
        return None
    lead_id, ts = str(found[0]["lead_id"]), found[0]["ts"]
    rows = _rows(
        conn,
        "SELECT id FROM events WHERE lead_id = %(lead)s AND ts >= %(from)s"
        " AND (ts, id) < (%(ts)s, %(id)s) ORDER BY ts DESC, id DESC LIMIT 1",
        {"lead": lead_id, "from": _not_before(lead_id), "ts": ts, "id": event_id},
    )
    return str(rows[0]["id"]) if rows else None


def _not_before(id_: str) -> datetime:
    """No event of this id (or of this lead) is older than this: the id's time less a day."""
    if not is_valid_id(id_):
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromtimestamp(id_timestamp_ms(id_) / 1000, UTC) - timedelta(days=1)


def flow_ids(conn: Connection, limit: int = 200) -> list[str]:
    """Every flow with events: a skip scan of ``events (flow_id, id)``, one probe per flow."""
    rows = _rows(
        conn,
        """
        WITH RECURSIVE f AS (
            (SELECT flow_id FROM events ORDER BY flow_id LIMIT 1)
            UNION ALL
            SELECT (SELECT e.flow_id FROM events e WHERE e.flow_id > f.flow_id
                    ORDER BY e.flow_id LIMIT 1)
            FROM f WHERE f.flow_id IS NOT NULL
        )
        SELECT flow_id FROM f WHERE flow_id IS NOT NULL LIMIT %(limit)s
        """,
        {"limit": limit},
    )
    return [str(r["flow_id"]) for r in rows]
