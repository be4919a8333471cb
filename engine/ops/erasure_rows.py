"""Erasure in Postgres: an erased lead's personal values overwritten with ``[erased]`` in
every table that holds them (the timeline of every projection generation, rejects, the
engine's duplicate fingerprints and intake answers).

The key is already gone when this runs (``engine.state.keys.erase_leads``), so the
sealed values left here could not be opened anyway; overwriting them removes even the
ciphertext, and a flow that does not seal loses its clear values here too. What is
overwritten: every sealed token of the lead, and every clear ``lead.*`` string value of
its snapshots wherever it appears in a row (a request body quotes the email).
Idempotent: a row already scrubbed is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import psycopg
from psycopg import sql

from engine.sealing import ERASED, PREFIX

ERASED_EVENT = "lead.erased"
# Values shorter than this (a state code, a flag) would match too much of other text.
_MIN_CLEAR = 4


def _token(lead_id: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{PREFIX}{lead_id}:") + r"[A-Za-z0-9_-]+")


def _clear_values(snapshots: list[Any]) -> list[str]:
    """The lead's own clear field values (``lead.*`` strings), longest first."""
    found: set[str] = set()
    for snapshot in snapshots:
        variables = snapshot.get("vars") if isinstance(snapshot, dict) else None
        if not isinstance(variables, dict):
            continue
        for name, value in variables.items():
            if (
                str(name).startswith("lead.")
                and isinstance(value, str)
                and len(value) >= _MIN_CLEAR
                and value != ERASED
                and PREFIX not in value
            ):
                found.add(value)
    return sorted(found, key=len, reverse=True)


def _scrubbed(value: Any, token: re.Pattern[str], clears: list[str]) -> Any:
    if isinstance(value, str):
        text = token.sub(ERASED, value)
        for clear in clears:
            text = text.replace(clear, ERASED)
        return text
    if isinstance(value, dict):
        return {k: _scrubbed(v, token, clears) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, token, clears) for v in value]
    return value


def _schemas_with(cur: psycopg.Cursor[Any], schema: str, table: str) -> list[str]:
    rows = cur.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = %s"
        " AND (table_schema = %s OR table_schema LIKE %s) ORDER BY 1",
        (table, schema, schema.replace("_", "\\_") + "\\_%"),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _scrub_events(cur: psycopg.Cursor[Any], schema: str, lead_id: str) -> int:
    table = sql.Identifier(schema, "events")
    rows = cur.execute(
        sql.SQL("SELECT id, snapshot, reason FROM {} WHERE lead_id = %s AND type <> %s").format(
            table
        ),
        (lead_id, ERASED_EVENT),
    ).fetchall()
    token, clears = _token(lead_id), _clear_values([r[1] for r in rows])
    changed = 0
    for event_id, snapshot, reason in rows:
        new_snapshot = _scrubbed(snapshot, token, clears)
        new_reason = _scrubbed(reason, token, clears)
        if new_snapshot != snapshot or new_reason != reason:
            cur.execute(
                sql.SQL("UPDATE {} SET snapshot = %s::jsonb, reason = %s WHERE id = %s").format(
                    table
                ),
                (orjson.dumps(new_snapshot).decode(), new_reason, event_id),
            )
            changed += 1
    return changed


def scrub_rows(conn: psycopg.Connection[Any], schema: str, lead_id: str) -> int:
    """Overwrite the lead's personal values in every table of ``schema`` (and its projection
    generations, ``schema_*``) in one transaction; returns the rows changed or deleted."""
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for events_schema in _schemas_with(cur, schema, "events"):
            changed += _scrub_events(cur, events_schema, lead_id)
        for rejects_schema in _schemas_with(cur, schema, "projector_rejects"):
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE key = %s").format(
                    sql.Identifier(rejects_schema, "projector_rejects")
                ),
                (lead_id.encode(),),
            )
            changed += cur.rowcount
        if _schemas_with(cur, schema, "engine_lead_fingerprints"):
            # A fingerprint is a hash of the lead's email or phone: it would still link them.
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE lead_id = %s").format(
                    sql.Identifier(schema, "engine_lead_fingerprints")
                ),
                (lead_id,),
            )
            changed += cur.rowcount
        if _schemas_with(cur, schema, "engine_intake_requests"):
            changed += _scrub_intake_answers(cur, schema, lead_id)
    return changed


def _scrub_intake_answers(cur: psycopg.Cursor[Any], schema: str, lead_id: str) -> int:
    """A recorded intake answer may quote the lead's values (a rejection's reason)."""
    table = sql.Identifier(schema, "engine_intake_requests")
    rows = cur.execute(
        sql.SQL(
            "SELECT flow_id, source_id, idempotency_key, answer FROM {}"
            " WHERE lead_id = %s AND answer IS NOT NULL"
        ).format(table),
        (lead_id,),
    ).fetchall()
    changed = 0
    token = _token(lead_id)
    for flow_id, source_id, key, answer in rows:
        new = _scrubbed(answer, token, [])
        if new != answer:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET answer = %s::jsonb"
                    " WHERE flow_id = %s AND source_id = %s AND idempotency_key = %s"
                ).format(table),
                (orjson.dumps(new).decode(), flow_id, source_id, key),
            )
            changed += 1
    return changed


def flows_of_leads(
    conn: psycopg.Connection[Any], schema: str, lead_ids: list[str]
) -> dict[str, str]:
    """Each lead's flow as the timeline knows it (a lead of a flow that does not seal has no
    key row to name it)."""
    found: dict[str, str] = {}
    with conn.cursor() as cur:
        for events_schema in _schemas_with(cur, schema, "events"):
            rows = cur.execute(
                sql.SQL("SELECT DISTINCT lead_id, flow_id FROM {} WHERE lead_id = ANY(%s)").format(
                    sql.Identifier(events_schema, "events")
                ),
                (lead_ids,),
            ).fetchall()
            found.update({str(lead): str(flow) for lead, flow in rows})
    return found
