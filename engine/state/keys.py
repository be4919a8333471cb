"""Per-lead data keys in Postgres (``engine_lead_keys``), wrapped by the master key.

``LeadKeys`` is a process's handle on them: it creates a lead's key the first time the
lead is sealed, fetches keys for a batch of leads in one query, and keeps the unwrapped
keys of recent leads in memory (a lead passes through a step once, and its key never
changes). Deleting a key (``erase``) is how a person is forgotten: the key row goes, a
tombstone stays, and no key is ever made again for that lead.

How an erasure reaches a running worker's memory: ``erase_leads`` sends the erased ids on
a Postgres notification channel (``NOTIFY``, delivered at its commit, never before), and
every ``LeadKeys`` connection listens on it. Before answering from memory a process reads
what it has heard - at most every ``_HEAR_EVERY`` seconds, and after each of its queries -
and drops those leads' keys, so the next use reads the database (no key: ``[erased]``). A
process that lost its connection heard nothing meanwhile: it forgets every key it held.
``_CACHE_SECONDS`` stays as a last bound, for a notification lost some other way.

``reveal_sealed`` is the readers' side: the API's own connection, keys looked up, never made.
Driver errors become ``StateUnavailableError``; nothing above imports psycopg.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from engine.errors import ConfigError
from engine.sealing import (
    MasterKey,
    SealingError,
    key_ids,
    master_key_from_env,
    new_data_key,
    person_digest,
    reveal,
    unwrap_key,
    wrap_key,
)
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import Connection, Cursor, connect, migrate_state

_CACHE = 20_000
# A key is trusted from memory this long at most, even if no erasure was heard (a
# notification lost with its connection is covered by forgetting every key, this is a
# last bound).
_CACHE_SECONDS = 30.0
# How often a process looks for erasures it has heard, before answering from memory: the
# longest an erased lead's key may still open its values in a running worker after the
# erasure commits (plus one record's handling). A look is one non-blocking socket poll.
_HEAR_EVERY = 0.05
# The notification channel erasures are sent on, per state schema (``current_schema()``).
_ERASED_CHANNEL = "leadflow_erased:"
_NOTIFY = "SELECT pg_notify(%s || current_schema(), %s)"
# Ids per notification (a payload holds at most 8000 bytes; a lead id is 26 characters).
_NOTIFY_IDS = 200

# The ids sent and the rows read in binary (``%b``, ``binary=True``): a batch's 500 ids are
# then neither quoted one by one into an array literal nor its keys decoded from hex.
_SELECT = "SELECT key_id, wrapped FROM engine_lead_keys WHERE key_id = ANY(%b)"
_ERASED = "SELECT lead_id FROM engine_erased_leads WHERE lead_id = ANY(%s)"
_INSERT = """
INSERT INTO engine_lead_keys (key_id, flow_id, master_key_id, wrapped)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[])
ON CONFLICT (key_id) DO NOTHING
"""
# Never for an erased lead (a replay of its intake record must not link it to a person again).
_INDEX = """
INSERT INTO engine_person_index (kind, digest, lead_id, flow_id)
SELECT %(kind)s, %(digest)s, %(lead)s, %(flow)s
WHERE NOT EXISTS (SELECT 1 FROM engine_erased_leads WHERE lead_id = %(lead)s)
ON CONFLICT DO NOTHING
"""


def _unwrapped(master: MasterKey, rows: Iterable[tuple[Any, ...]]) -> dict[str, bytes]:
    return {str(key_id): unwrap_key(master, str(key_id), bytes(w)) for key_id, w in rows}


def _read_keys(cur: Cursor, master: MasterKey, ids: list[str]) -> dict[str, bytes]:
    return _unwrapped(master, cur.execute(_SELECT, (ids,), binary=True).fetchall())


def read_wrapped(conn: psycopg.Connection[Any], key_ids: Iterable[str]) -> dict[str, bytes]:
    """The wrapped data keys of ``key_ids`` that still exist. For readers: never makes one."""
    ids = sorted(set(key_ids))
    if not ids:
        return {}
    try:
        with conn.transaction(), conn.cursor() as cur:  # a savepoint inside a caller's transaction
            rows = cur.execute(_SELECT, (ids,), binary=True).fetchall()
    except psycopg.Error as exc:
        raise StateUnavailableError(f"lead keys not readable: {type(exc).__name__}") from exc
    return {str(key_id): bytes(wrapped) for key_id, wrapped in rows}


def reveal_sealed(conn: psycopg.Connection[Any], value: Any, *, sees_pii: bool) -> Any:
    """``value`` (what a reader is about to get) with its sealed values opened for it
    (``engine.sealing.reveal``): one key query for all the leads it names. Never raises:
    no master key or a database error reads ``[unreadable]``, and so does a key that does
    not unwrap (that lead's values only)."""
    ids = key_ids(value)
    if not ids:
        return value
    master: MasterKey | None
    wrapped: dict[str, bytes] | None
    try:
        master = master_key_from_env()
        wrapped = read_wrapped(conn, ids) if master is not None else None
    except (StateUnavailableError, ConfigError):
        master, wrapped = None, None

    def lookup(key_id: str) -> bytes | None:
        if master is None or wrapped is None:
            raise SealingError("no keys")
        found = wrapped.get(key_id)
        return None if found is None else unwrap_key(master, key_id, found)

    return reveal(value, lookup, sees_pii=sees_pii)


class LeadKeys:
    """One process's access to the lead keys; not thread-safe (one per handler)."""

    def __init__(self, settings: Settings, master: MasterKey) -> None:
        self.settings = settings
        self.master = master
        # key id -> (data key or None for none, when it was read)
        self._cache: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        self._conn: Connection | None = None
        self._migrated = False
        self._heard_at = 0.0

    def close(self) -> None:
        """Close the connection, and forget every key: with no connection listening, an
        erasure committed meanwhile would not be heard."""
        self._cache.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _remember(self, key_id: str, key: bytes | None, now: float) -> None:
        self._cache[key_id] = (key, now)
        self._cache.move_to_end(key_id)
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)

    def _from_memory(
        self, ids: Iterable[str], now: float, *, keys_only: bool = False
    ) -> tuple[dict[str, bytes | None], list[str]]:
        """What memory answers for ``ids`` (after the erasures heard), and what it does not:
        a key older than ``_CACHE_SECONDS``, or with ``keys_only`` one remembered as none."""
        self._hear_erasures(now)
        cache, out, missing = self._cache, {}, []
        for key_id in ids:
            found = cache.get(key_id)
            if (
                found is None
                or now - found[1] >= _CACHE_SECONDS
                or (keys_only and found[0] is None)
            ):
                missing.append(key_id)
            else:
                out[key_id] = found[0]
        return out, missing

    def _hear_erasures(self, now: float, *, force: bool = False) -> None:
        """Drop the keys of leads whose erasure this process has heard of since it last
        looked (at most every ``_HEAR_EVERY`` seconds unless ``force``)."""
        conn = self._conn
        if conn is None or conn.closed:
            self.close()  # lost (or never made): with no one listening, no key is trusted
            return
        if not force and now - self._heard_at < _HEAR_EVERY:
            return
        self._heard_at = now
        try:
            notes = list(conn.notifies(timeout=0))
        except psycopg.Error:
            self.close()  # forgets every key: nothing heard is nothing missed
            return
        for note in notes:
            for key_id in note.payload.split(","):
                self._cache.pop(key_id, None)

    def _connection(self) -> Connection:
        """The connection, listening for erasures before it answers anything (a key read
        after LISTEN is either still there, or its erasure will be heard)."""
        if self._conn is None or self._conn.closed:
            if not self._migrated:
                migrate_state(self.settings)
                self._migrated = True
            conn = connect(self.settings, statement_timeout_ms=5_000)
            try:
                row = conn.execute("SELECT current_schema()").fetchone()
                channel = _ERASED_CHANNEL + str(row[0] if row else "")
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except psycopg.Error as exc:
                conn.close()
                raise StateUnavailableError(
                    f"lead keys: listening for erasures failed ({type(exc).__name__})"
                ) from exc
            self._cache.clear()  # nothing was listening before: what memory held is not trusted
            self._conn = conn
        return self._conn

    def _cursor_work(self, what: str, work: Any) -> Any:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                done = work(cur)
        except psycopg.Error as exc:
            self.close()
            raise StateUnavailableError(f"lead keys: {what} failed ({type(exc).__name__})") from exc
        except SealingError as exc:
            # Not this lead's fault: the master key is not the one that wrapped the keys.
            # The lead waits (a transient error: retried, logged), it is not dead-lettered.
            raise StateUnavailableError(
                f"lead keys: {what}: a data key does not unwrap with this master key"
            ) from exc
        return done

    def ensure(self, flow_id: str, lead_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Each lead's data key, made where the lead has none yet; None for an erased lead
        (it never gets a key again)."""
        now = time.monotonic()
        out, missing = self._from_memory(set(lead_ids), now, keys_only=True)
        if missing:
            missing.sort()

            def work(cur: Cursor) -> dict[str, bytes | None]:
                found = _read_keys(cur, self.master, missing)
                erased = {r[0] for r in cur.execute(_ERASED, (missing,)).fetchall()}
                new = [i for i in missing if i not in found and i not in erased]
                if new:
                    keys = {i: new_data_key() for i in new}
                    cur.execute(
                        _INSERT,
                        (
                            new,
                            [flow_id] * len(new),
                            [self.master.key_id] * len(new),
                            [wrap_key(self.master, i, keys[i]) for i in new],
                        ),
                    )
                    # Another process may have made some of them first: read the winners.
                    found.update(_read_keys(cur, self.master, new))
                return {i: found.get(i) for i in missing}

            made: dict[str, bytes | None] = self._cursor_work("ensure", work)
            for key_id, key in made.items():
                self._remember(key_id, key, now)
                out[key_id] = key
            # An erasure heard during the query may have committed after it read: those
            # keys are dropped now, before the next answer from memory.
            self._hear_erasures(time.monotonic(), force=True)
        return out

    def fetch(self, lead_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Each lead's data key, None where it has none (erased, or never sealed)."""
        now = time.monotonic()
        out, missing = self._from_memory(set(lead_ids), now)
        if missing:
            missing.sort()

            def work(cur: Cursor) -> dict[str, bytes]:
                return _read_keys(cur, self.master, missing)

            found: dict[str, bytes] = self._cursor_work("fetch", work)
            for key_id in missing:
                key = found.get(key_id)
                self._remember(key_id, key, now)
                out[key_id] = key
            # An erasure heard during the query may have committed after it read: those
            # keys are dropped now, before the next answer from memory.
            self._hear_erasures(time.monotonic(), force=True)
        return out

    def index_person(
        self, flow_id: str, lead_id: str, emails: list[str], phones: list[str]
    ) -> None:
        """Record the lead under the keyed hashes of its emails and phones (for erasure)."""
        rows = [
            {"kind": kind, "digest": digest, "lead": lead_id, "flow": flow_id}
            for kind, values in (("email", emails), ("phone", phones))
            for value in values
            if (digest := person_digest(self.master, kind, value)) is not None
        ]
        if rows:
            self._cursor_work("index", lambda cur: cur.executemany(_INDEX, rows))


def find_person(cur: Cursor, master: MasterKey, kind: str, value: str) -> list[str]:
    """The lead ids recorded under a person's email or phone (none for a malformed value)."""
    digest = person_digest(master, kind, value)
    if digest is None:
        return []
    rows = cur.execute(
        "SELECT lead_id FROM engine_person_index WHERE kind = %s AND digest = %s ORDER BY lead_id",
        (kind, digest),
    ).fetchall()
    return [str(r[0]) for r in rows]


# A reader's search (the UI's search box): the person's leads through the keyed hash, never
# an erased one (its index rows stay until the erasure's second phase finishes).
_SEARCH_PERSON = """
SELECT i.lead_id FROM engine_person_index i
WHERE i.kind = %(kind)s AND i.digest = %(digest)s
  AND (%(flow)s::text IS NULL OR i.flow_id = %(flow)s)
  AND NOT EXISTS (SELECT 1 FROM engine_erased_leads e WHERE e.lead_id = i.lead_id)
ORDER BY i.lead_id DESC LIMIT %(cap)s
"""


def _reader_rows(conn: psycopg.Connection[Any], query: str, params: Any) -> list[str]:
    """The first column of ``query``'s rows, in a savepoint of the reader's connection; none
    where the state tables were never made (a schema that has only ever been projected into:
    nothing in it was sealed or erased). Other driver errors: ``StateUnavailableError``."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            return [str(r[0]) for r in cur.execute(query, params).fetchall()]
    except psycopg.errors.UndefinedTable:
        return []
    except psycopg.Error as exc:
        raise StateUnavailableError(f"person index not readable: {type(exc).__name__}") from exc


def search_person(
    conn: psycopg.Connection[Any], kind: str, value: str, flow_id: str | None, limit: int
) -> list[str]:
    """A reader's lookup of the leads recorded under an email or phone (``kind``), newest
    first: how a lead whose values are sealed is found, since its rows hold only ciphertext.
    The value is hashed here with the master key from the environment and never leaves this
    process; erased leads are left out. None found without a master key (nothing sealed can
    be found, or read, without one) or for a malformed value."""
    try:
        master = master_key_from_env()
    except ConfigError:
        return []  # a reader with a broken key setting reads sealed values as [unreadable]
    digest = None if master is None else person_digest(master, kind, value)
    if digest is None:
        return []
    params = {"kind": kind, "digest": digest, "flow": flow_id, "cap": limit}
    return _reader_rows(conn, _SEARCH_PERSON, params)


def erased_among(conn: psycopg.Connection[Any], lead_ids: list[str]) -> set[str]:
    """Which of ``lead_ids`` are erased (a tombstone), for a reader that must not find them."""
    if not lead_ids:
        return set()
    query = "SELECT lead_id FROM engine_erased_leads WHERE lead_id = ANY(%s)"
    return set(_reader_rows(conn, query, (lead_ids,)))


def known_leads(cur: Cursor, lead_ids: list[str]) -> list[str]:
    """Which of ``lead_ids`` the engine knows: a key, a person-index row or a tombstone."""
    rows = cur.execute(
        "SELECT key_id FROM engine_lead_keys WHERE key_id = ANY(%(ids)s)"
        " UNION SELECT lead_id FROM engine_person_index WHERE lead_id = ANY(%(ids)s)"
        " UNION SELECT lead_id FROM engine_erased_leads WHERE lead_id = ANY(%(ids)s)",
        {"ids": lead_ids},
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def erase_leads(cur: Cursor, lead_ids: list[str], flows: Mapping[str, str] | None = None) -> int:
    """Delete the leads' keys and leave tombstones, in the
    caller's transaction (one commit: never readable yet recorded as erased). The tombstone
    keeps the lead's flow (from its key, its index rows or ``flows``) for the second phase
    (``engine.ops.erasure``). Returns how many keys were deleted. Idempotent."""
    given = flows or {}
    cur.execute(
        "INSERT INTO engine_erased_leads (lead_id, flow_id)"
        " SELECT l, COALESCE("
        "   (SELECT flow_id FROM engine_lead_keys WHERE key_id = l),"
        "   (SELECT min(flow_id) FROM engine_person_index WHERE lead_id = l), g)"
        " FROM unnest(%s::text[], %s::text[]) AS u(l, g)"
        " ON CONFLICT (lead_id) DO UPDATE"
        " SET flow_id = COALESCE(engine_erased_leads.flow_id, EXCLUDED.flow_id)",
        (lead_ids, [given.get(i) for i in lead_ids]),
    )
    cur.execute("DELETE FROM engine_lead_keys WHERE key_id = ANY(%s)", (lead_ids,))
    deleted = int(cur.rowcount)
    # Running workers drop these keys from memory when they hear this (sent at the commit).
    for at in range(0, len(lead_ids), _NOTIFY_IDS):
        cur.execute(_NOTIFY, (_ERASED_CHANNEL, ",".join(lead_ids[at : at + _NOTIFY_IDS])))
    # The person-index rows (keyed hashes, nothing readable) stay until the second phase
    # finishes (``finish_erasure``): the same ``erase --email`` run again after a crash
    # must still find the leads it has to finish.
    return deleted


def unfinished_erasures(cur: Cursor) -> list[tuple[str, str | None, int]]:
    """Tombstones whose second phase has not finished: (lead id, flow id, erased at ms)."""
    rows = cur.execute(
        "SELECT lead_id, flow_id, (extract(epoch FROM erased_at) * 1000)::bigint"
        " FROM engine_erased_leads WHERE finished_at IS NULL ORDER BY lead_id"
    ).fetchall()
    return [(str(r[0]), None if r[1] is None else str(r[1]), int(r[2])) for r in rows]


def finish_erasure(cur: Cursor, lead_id: str) -> None:
    """The erasure's last act: the keyed hashes go (nothing links the person to the lead
    any more) and the tombstone says finished."""
    cur.execute("DELETE FROM engine_person_index WHERE lead_id = %s", (lead_id,))
    cur.execute("UPDATE engine_erased_leads SET finished_at = now() WHERE lead_id = %s", (lead_id,))


__all__ = [
    "LeadKeys",
    "SealingError",
    "erase_leads",
    "erased_among",
    "find_person",
    "finish_erasure",
    "known_leads",
    "read_wrapped",
    "reveal_sealed",
    "search_person",
    "unfinished_erasures",
]
