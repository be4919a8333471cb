"""Caps, duplicates and auction records in Postgres: short transactions, every write keyed.

A step's Kafka transaction and these writes cannot commit atomically, so every
operation here is idempotent: a lead re-run after a crash, a retry or a replay
finds its own rows and is decided as before, never counted twice. Each
transaction locks what it counts (the cap period's counter row, an advisory
lock per fingerprint) so two workers can never both take the last slot, nor
both admit two matching leads. Locks are taken in one global order
(fingerprint, then counters by key) so transactions never deadlock.

Driver errors become ``StateUnavailableError`` here; nothing above imports psycopg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import structlog

from engine.settings import Settings
from engine.state.auctions import AuctionPlace, add_refused_post, read_auction, record_auction
from engine.state.errors import StateMigrationError, StateUnavailableError
from engine.state.postgres import (
    Connection,
    Cursor,
    at_ms,
    checked_schema,
    connect,
    migrate_state,
)
from engine.steps.auction import AuctionRecord
from engine.steps.calls import Answer
from engine.steps.cap_checks import CapCheck, CapCount, first_full
from engine.steps.duplicates import DAY_MS, LeadOrder, earlier_match

log = structlog.get_logger(__name__)

T = TypeVar("T")


# -- SQL ---------------------------------------------------------------------------------

# Takes the period's row lock (creating the row on first use) and reads its
# count. DO UPDATE rather than DO NOTHING: it locks the row and returns it.
_LOCK_COUNTER = """
INSERT INTO engine_cap_counters AS c (cap_key, window_start, window_end, count)
VALUES (%(key)s, %(start)s, %(end)s, 0)
ON CONFLICT (cap_key, window_start) DO UPDATE SET count = c.count
RETURNING c.count
"""

# A statement of its own, after the lock: under READ COMMITTED it then sees
# every slot committed while this transaction waited for the lock (a subquery
# in the statement above would use the snapshot from before the wait).
_HOLDS = """
SELECT EXISTS (SELECT 1 FROM engine_cap_ledger
               WHERE cap_key = %(key)s AND window_start = %(start)s AND lead_id = %(lead)s)
"""

# ON CONFLICT: a fenced-off twin of this worker may have taken the slot for
# the same lead meanwhile; the count moves only with a row really inserted.
_TAKE = """
WITH taken AS (
    INSERT INTO engine_cap_ledger (cap_key, window_start, lead_id, confirmed_at)
    VALUES (%(key)s, %(start)s, %(lead)s, CASE WHEN %(confirmed)s THEN now() END)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE engine_cap_counters SET count = count + (SELECT count(*) FROM taken), updated_at = now()
WHERE cap_key = %(key)s AND window_start = %(start)s
"""

_GIVE_BACK = """
WITH gone AS (
    DELETE FROM engine_cap_ledger
    WHERE cap_key = %(key)s AND window_start = %(start)s AND lead_id = %(lead)s
    RETURNING 1
)
UPDATE engine_cap_counters SET count = count - (SELECT count(*) FROM gone), updated_at = now()
WHERE cap_key = %(key)s AND window_start = %(start)s
"""

_CONFIRM = """
UPDATE engine_cap_ledger l SET confirmed_at = now()
FROM unnest(%(keys)s::text[], %(starts)s::timestamptz[]) AS k(cap_key, window_start)
WHERE l.cap_key = k.cap_key AND l.window_start = k.window_start
  AND l.lead_id = %(lead)s AND l.confirmed_at IS NULL
"""

# Everything within the window up to the lead's own millisecond; which of
# these came before the lead is decided in Python (duplicates.earlier_match).
_FINGERPRINT_LEADS = """
SELECT submitted_ms, lead_id FROM engine_lead_fingerprints
WHERE flow_id = %(flow)s AND fingerprint = %(fp)s
  AND submitted_ms > %(oldest)s AND submitted_ms <= %(ms)s
"""

_ADD_FINGERPRINT = """
INSERT INTO engine_lead_fingerprints (flow_id, fingerprint, submitted_ms, lead_id)
VALUES (%(flow)s, %(fp)s, %(ms)s, %(lead)s)
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    """What the source asks about duplicates: this flow, this fingerprint, this window."""

    flow_id: str
    fingerprint: bytes
    window_days: int

    @property
    def lock_id(self) -> int:
        # The fingerprint is a hash already (flow id included): its first 8
        # bytes are a fine advisory lock key; a collision only serialises.
        return int.from_bytes(self.fingerprint[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class Admission:
    """The source's answer: admitted, or the earlier lead it duplicates, or the full cap."""

    duplicate_of: LeadOrder | None = None
    capped: CapCount | None = None

    @property
    def admitted(self) -> bool:
        return self.duplicate_of is None and self.capped is None


def _params(check: CapCheck, lead_id: str, **extra: object) -> dict[str, object]:
    return {
        "key": check.key,
        "start": at_ms(check.window.start_ms),
        "end": at_ms(check.window.end_ms),
        "lead": lead_id,
        **extra,
    }


def _lock_order(checks: Sequence[CapCheck]) -> list[CapCheck]:
    return sorted(checks, key=lambda c: (c.key, c.window.start_ms))


def _count(cur: Cursor, lead_id: str, checks: Sequence[CapCheck]) -> list[CapCount]:
    """Lock each counter (in lock order) and read it; returned in the caps' own order."""
    found: dict[tuple[str, int], CapCount] = {}
    for check in _lock_order(checks):
        params = _params(check, lead_id)
        counted = cur.execute(_LOCK_COUNTER, params).fetchone()
        holds = cur.execute(_HOLDS, params).fetchone()
        assert counted is not None and holds is not None  # both always return one row
        found[(check.key, check.window.start_ms)] = CapCount(check, int(counted[0]), holds[0])
    return [found[(c.key, c.window.start_ms)] for c in checks]


def _take(cur: Cursor, lead_id: str, checks: Sequence[CapCheck], confirmed: bool) -> None:
    for check in _lock_order(checks):
        cur.execute(_TAKE, _params(check, lead_id, confirmed=confirmed))


def _give_back(cur: Cursor, lead_id: str, checks: Sequence[CapCheck]) -> None:
    for check in _lock_order(checks):
        cur.execute(_GIVE_BACK, _params(check, lead_id))


def _reserve(
    cur: Cursor, lead_id: str, checks: Sequence[CapCheck], confirmed: bool
) -> CapCount | None:
    """All of the lead's caps or none: the first full cap, with this lead holding no slot,
    or None with the lead holding a slot in each."""
    counts = _count(cur, lead_id, checks)
    full = first_full(counts)
    if full is not None:
        # A slot in another cap, left from a run before a cap was lowered or
        # added, must not count a lead that goes no further.
        _give_back(cur, lead_id, [c.check for c in counts if c.holds_lead])
        return full
    _take(cur, lead_id, [c.check for c in counts if not c.holds_lead], confirmed)
    return None


class StateStore:
    """One step worker's connection to the state tables, reopened after a failure.

    Not thread-safe: one per handler, as the worker loop handles one lead at a time.
    """

    def __init__(self, settings: Settings) -> None:
        checked_schema(settings.db_schema)  # a bad name fails the worker at start, not a lead
        self.settings = settings
        # Well inside the Kafka transaction timeout: a hung statement fails the
        # lead back to the worker loop before the broker aborts its transaction.
        self.statement_timeout_ms = max(500, settings.transaction_timeout_ms // 4)
        self._conn: Connection | None = None
        self._migrated = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- what the steps ask ------------------------------------------------------------

    def reserve(self, lead_id: str, checks: Sequence[CapCheck]) -> CapCount | None:
        """Take a slot for the lead in every cap before a delivery, or return the full cap.

        A lead that holds its slot already (a re-run) keeps it, even in a cap
        that has filled since. Release or confirm it once the delivery is judged.
        """
        if not checks:
            return None
        return self._transaction(
            "reserve", lambda cur: _reserve(cur, lead_id, checks, confirmed=False)
        )

    def release(self, lead_id: str, checks: Sequence[CapCheck]) -> None:
        """Give the lead's slots back (the delivery did not succeed); a no-op if it holds none."""
        if checks:
            self._transaction("release", lambda cur: self._release(cur, lead_id, checks))

    def confirm(self, lead_id: str, checks: Sequence[CapCheck]) -> None:
        """Mark the lead's slots as delivered (they count either way; this says they are final)."""
        if not checks:
            return
        params = {
            "keys": [c.key for c in checks],
            "starts": [at_ms(c.window.start_ms) for c in checks],
            "lead": lead_id,
        }
        self._transaction("confirm", lambda cur: cur.execute(_CONFIRM, params))

    def admit(
        self, lead: LeadOrder, checks: Sequence[CapCheck], duplicates: DuplicateCheck | None
    ) -> Admission:
        """The source's question: is the lead a duplicate, is a flow or source cap full?

        Admitted, it holds a (confirmed) slot in each cap and its fingerprint is
        recorded, all in one transaction; rejected, it leaves nothing behind. A
        lead admitted before (a re-run) finds its own fingerprint and is admitted again.
        """
        if not checks and duplicates is None:
            return Admission()
        return self._transaction("admit", lambda cur: self._admit(cur, lead, checks, duplicates))

    def count(self, check: CapCheck) -> int:
        """How many leads the cap's period holds now (0 for a period not yet used)."""
        params = _params(check, "")
        row = self._transaction(
            "count",
            lambda cur: cur.execute(
                "SELECT count FROM engine_cap_counters"
                " WHERE cap_key = %(key)s AND window_start = %(start)s",
                params,
            ).fetchone(),
        )
        return int(row[0]) if row is not None else 0

    def record_auction(self, place: AuctionPlace, record: AuctionRecord) -> AuctionRecord:
        """Keep an auction's record before its first post (``engine.state.auctions``);
        the record that stands, the first one written for ``place``."""
        return self._transaction("record auction", lambda cur: record_auction(cur, place, record))

    def recorded_auction(self, key: str) -> AuctionRecord | None:
        """The auction's record if a run before this one kept it."""
        return self._transaction("read auction", lambda cur: read_auction(cur, key))

    def record_refused_post(self, key: str, position: int, buyer_id: str, answer: Answer) -> None:
        """Keep that an auction's post ``position`` did not take the lead, before the next."""
        self._transaction(
            "record auction post",
            lambda cur: add_refused_post(cur, key, position, buyer_id, answer),
        )

    # -- transactions ------------------------------------------------------------------

    @staticmethod
    def _release(cur: Cursor, lead_id: str, checks: Sequence[CapCheck]) -> None:
        for check in _lock_order(checks):
            # The counter's lock first, as in _reserve, so the two never deadlock.
            cur.execute(
                "SELECT 1 FROM engine_cap_counters"
                " WHERE cap_key = %(key)s AND window_start = %(start)s FOR UPDATE",
                _params(check, lead_id),
            )
        _give_back(cur, lead_id, checks)

    @staticmethod
    def _admit(
        cur: Cursor, lead: LeadOrder, checks: Sequence[CapCheck], dup: DuplicateCheck | None
    ) -> Admission:
        params: dict[str, object] = {}
        if dup is not None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (dup.lock_id,))
            params = {
                "flow": dup.flow_id,
                "fp": dup.fingerprint,
                "ms": lead.submitted_ms,
                "lead": lead.lead_id,
                "oldest": lead.submitted_ms - dup.window_days * DAY_MS,
            }
            rows = cur.execute(_FINGERPRINT_LEADS, params).fetchall()
            known = [LeadOrder(int(ms), str(lead_id)) for ms, lead_id in rows]
            if lead not in known:
                earlier = earlier_match(lead, known, dup.window_days)
                if earlier is not None:
                    return Admission(duplicate_of=earlier)
        full = _reserve(cur, lead.lead_id, checks, confirmed=True)
        if full is not None:
            return Admission(capped=full)
        if dup is not None:
            cur.execute(_ADD_FINGERPRINT, params)
        return Admission()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            if not self._migrated:
                try:
                    migrate_state(self.settings)
                except StateMigrationError as exc:
                    # Leads wait (and the log says why) rather than go to the dead-letter topic.
                    raise StateUnavailableError(f"state tables not usable: {exc}") from exc
                self._migrated = True
            self._conn = connect(self.settings, statement_timeout_ms=self.statement_timeout_ms)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _transaction(self, what: str, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in one transaction; once more on a new connection if a reused
        one turns out dead (a Postgres restart, an idle connection cut). Safe because
        every operation is idempotent, even when the first commit's fate is unknown."""
        for attempt in (1, 2):
            reused = self._conn is not None and not self._conn.closed
            conn = self._connection()
            try:
                with _translated(what), conn.transaction(), conn.cursor() as cur:
                    return work(cur)
            except StateUnavailableError as exc:
                self._drop()
                if not reused or attempt == 2:
                    raise
                log.warning("state connection lost, reconnecting", operation=what, error=str(exc))
        raise AssertionError("unreachable")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Any driver error becomes StateUnavailableError: the lead waits and is retried.

    Even errors that are not "connection lost" (a missing table, a timeout):
    a cap or duplicate check that cannot be answered must stop the lead, not
    send it to the dead-letter topic or let it through unchecked.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise StateUnavailableError(f"state store failed to {what}: {exc}") from exc
