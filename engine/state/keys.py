"""Per-lead data keys in Postgres (``engine_lead_keys``), wrapped by the master key.

``LeadKeys`` is a process's handle on them: it creates a lead's key the first time the
lead is sealed, fetches keys for a batch of leads in one query, and keeps the unwrapped
keys of recent leads in memory (a lead passes through a step once, and its key never
changes). Deleting a key (``erase``) is how a person is forgotten: the key row goes, a
tombstone stays, and no key is ever made again for that lead.

``reveal_sealed`` is the readers' side: the API's own connection, keys looked up, never made.
Driver errors become ``StateUnavailableError``; nothing above imports psycopg.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

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
# A key is trusted from memory this long: a process that still holds an erased lead's key
# (a delivery retried after the erasure) stops opening its values within this time.
_CACHE_SECONDS = 30.0

_SELECT = "SELECT key_id, wrapped FROM engine_lead_keys WHERE key_id = ANY(%s)"
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


def read_wrapped(conn: psycopg.Connection[Any], key_ids: Iterable[str]) -> dict[str, bytes]:
    """The wrapped data keys of ``key_ids`` that still exist. For readers: never makes one."""
    ids = sorted(set(key_ids))
    if not ids:
        return {}
    try:
        with conn.transaction(), conn.cursor() as cur:  # a savepoint inside a caller's transaction
            rows = cur.execute(_SELECT, (ids,)).fetchall()
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

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _remember(self, key_id: str, key: bytes | None) -> None:
        self._cache[key_id] = (key, time.monotonic())
        self._cache.move_to_end(key_id)
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)

    def _known(self, key_id: str) -> bool:
        found = self._cache.get(key_id)
        return found is not None and time.monotonic() - found[1] < _CACHE_SECONDS

    def _cached(self, key_id: str) -> bytes | None:
        found = self._cache.get(key_id)
        return None if found is None else found[0]

    def _cursor_work(self, what: str, work: Any) -> Any:
        if self._conn is None or self._conn.closed:
            if not self._migrated:
                migrate_state(self.settings)
                self._migrated = True
            self._conn = connect(self.settings, statement_timeout_ms=5_000)
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                return work(cur)
        except psycopg.Error as exc:
            self.close()
            raise StateUnavailableError(f"lead keys: {what} failed ({type(exc).__name__})") from exc
        except SealingError as exc:
            # Not this lead's fault: the master key is not the one that wrapped the keys.
            # The lead waits (a transient error: retried, logged), it is not dead-lettered.
            raise StateUnavailableError(
                f"lead keys: {what}: a data key does not unwrap with this master key"
            ) from exc

    def ensure(self, flow_id: str, lead_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Each lead's data key, made where the lead has none yet; None for an erased lead
        (it never gets a key again)."""
        ids = sorted(set(lead_ids))
        missing = [i for i in ids if not self._known(i) or self._cached(i) is None]
        if missing:

            def work(cur: Cursor) -> dict[str, bytes | None]:
                found = _unwrapped(self.master, cur.execute(_SELECT, (missing,)).fetchall())
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
                    found.update(_unwrapped(self.master, cur.execute(_SELECT, (new,)).fetchall()))
                return {i: found.get(i) for i in missing}

            for key_id, key in self._cursor_work("ensure", work).items():
                self._remember(key_id, key)
        return {i: self._cached(i) for i in ids}

    def fetch(self, lead_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Each lead's data key, None where it has none (erased, or never sealed)."""
        ids = sorted(set(lead_ids))
        missing = [i for i in ids if not self._known(i)]
        if missing:

            def work(cur: Cursor) -> dict[str, bytes]:
                return _unwrapped(self.master, cur.execute(_SELECT, (missing,)).fetchall())

            found: dict[str, bytes] = self._cursor_work("fetch", work)
            for key_id in missing:
                self._remember(key_id, found.get(key_id))
        return {i: self._cached(i) for i in ids}

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
    # The person-index rows (keyed hashes, nothing readable) stay until the second phase
    # finishes (``finish_erasure``): the same ``erase --email`` run again after a crash
    # must still find the leads it has to finish.
    return int(cur.rowcount)


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
