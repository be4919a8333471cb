"""Alert evaluation's state in Postgres (state migration 008): positions, windows, actions.

One evaluator per flow: it holds a session advisory lock on the connection it commits
through, so a second one (a restart that overlapped, a second host) waits; if that
connection dies the lock goes with it, and the evaluator must load everything again
before it decides anything (``AlertStateStore`` is then closed and reopened).

Each batch is one transaction: the offset after the last record of each partition read,
the rule instances that changed, the system events and the actions their changes owe.
So after a kill -9 the evaluator resumes from the last commit, with the state of that
moment, and re-decides the same records the same way: an alert fires once.

Driver errors become ``StateUnavailableError`` here; nothing above imports psycopg.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from engine.alerts.actions import ActionDraft
from engine.alerts.evaluation import AlertChange, Key, RuleInstance
from engine.ids import derived_lead_id
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.outbox import record_system_event
from engine.state.postgres import Connection, connect, migrate_state

Position = tuple[str, int]  # (topic, partition)

_SAVE_POSITION = """
INSERT INTO engine_alert_positions (flow_id, topic, partition, next_offset)
VALUES (%s, %s, %s, %s)
ON CONFLICT (flow_id, topic, partition)
DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""

_SAVE_INSTANCE = """
INSERT INTO engine_alert_windows (flow_id, rule_id, subject, samples, alert, firing)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (flow_id, rule_id, subject)
DO UPDATE SET samples = EXCLUDED.samples, alert = EXCLUDED.alert, firing = EXCLUDED.firing,
              updated_at = now()
"""

_ADD_ACTION = """
INSERT INTO engine_alert_actions (id, flow_id, alert_id, kind, payload)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""

# Claimed under a lease (the next attempt pushed out) rather than a held row lock: the
# action runs outside any transaction (an HTTP call, a flow update), and a runner that
# dies mid-action leaves it to be picked up again when the lease ends. An alert's actions
# of one kind go in order: its resolution is not sent while its trigger is still retried.
_CLAIM = """
UPDATE engine_alert_actions a
SET attempts = a.attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease)s)
WHERE a.id IN (
    SELECT d.id FROM engine_alert_actions d
    WHERE d.flow_id = %(flow)s AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM engine_alert_actions e
          WHERE e.flow_id = d.flow_id AND e.alert_id = d.alert_id AND e.kind = d.kind
            AND e.status = 'pending' AND e.created_at < d.created_at)
    ORDER BY d.created_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING a.id, a.alert_id, a.kind, a.payload, a.attempts
"""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    key: Key
    window: dict[str, Any]
    alert: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimedAction:
    id: str
    alert_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StateUnavailableError(f"alert state failed to {what}: {exc}") from exc


def _lock_key(flow_id: str) -> str:
    return f"leadflow.alerts.{flow_id}"


class AlertStateStore:
    """The evaluator's connection: its lock, its state, its commits."""

    def __init__(self, settings: Settings, flow_id: str) -> None:
        self.flow_id = flow_id
        migrate_state(settings)
        self._conn: Connection = connect(settings)

    def acquire(self, stop: threading.Event, retry_s: float = 1.0) -> bool:
        """Wait for the flow's evaluator lock; False if ``stop`` came first."""
        while not stop.is_set():
            with _translated("take the evaluator lock"):
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                    (_lock_key(self.flow_id),),
                ).fetchone()
            if row is not None and row[0]:
                return True
            stop.wait(retry_s)
        return False

    def positions(self) -> dict[Position, int]:
        with _translated("read positions"):
            rows = self._conn.execute(
                "SELECT topic, partition, next_offset FROM engine_alert_positions"
                " WHERE flow_id = %s",
                (self.flow_id,),
            ).fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def instances(self) -> list[StoredInstance]:
        with _translated("read alert windows"):
            rows = self._conn.execute(
                "SELECT rule_id, subject, samples, alert FROM engine_alert_windows"
                " WHERE flow_id = %s",
                (self.flow_id,),
            ).fetchall()
        return [StoredInstance((str(r), str(s)), dict(w), dict(a)) for r, s, w, a in rows]

    def commit(
        self,
        positions: dict[Position, int],
        instances: Sequence[tuple[Key, RuleInstance]],
        changes: Sequence[tuple[AlertChange, Sequence[ActionDraft]]],
    ) -> None:
        """Everything a batch decided, in one transaction (see the module's docstring)."""
        with _translated("commit a batch"), self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                _SAVE_POSITION, [(self.flow_id, t, p, o) for (t, p), o in positions.items()]
            )
            cur.executemany(
                _SAVE_INSTANCE,
                [
                    (
                        self.flow_id,
                        rule_id,
                        subject,
                        Jsonb(inst.window.to_json()),
                        Jsonb(inst.state.to_json()),
                        inst.state.firing,
                    )
                    for (rule_id, subject), inst in instances
                ],
            )
            for change, drafts in changes:
                payload = change.payload
                record_system_event(
                    cur,
                    f"alert.{change.transition}",
                    event_id=derived_lead_id(
                        _epoch_ms(payload["occurred_at"]), change.alert_id, change.transition
                    ),
                    flow_id=self.flow_id,
                    # The resource's path, as the other system events name theirs (the
                    # relay's Kafka key: an alert's trigger and resolution keep their order).
                    subject=f"flows/{self.flow_id}/alerts/{change.alert_id}",
                    data=payload,
                    reason=str(payload["summary"]),
                    occurred_at=datetime.fromisoformat(payload["occurred_at"]),
                )
                for n, draft in enumerate(drafts):
                    action_id = f"{change.alert_id}.{change.transition}.{draft.kind}.{n}"
                    cur.execute(
                        _ADD_ACTION,
                        (
                            action_id,
                            self.flow_id,
                            change.alert_id,
                            draft.kind,
                            Jsonb(draft.payload),
                        ),
                    )

    def close(self) -> None:
        self._conn.close()


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp() * 1000)


class AlertActionQueue:
    """The actions owed, for the runner that carries them out (its own connection)."""

    def __init__(self, settings: Settings, flow_id: str) -> None:
        self.settings = settings
        self.flow_id = flow_id
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings)
        return self._conn

    def _run(self, what: str, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with _translated(what):
                cur = self._connection().execute(query, params)
                return cur.fetchall() if cur.description else []
        except StateUnavailableError:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise

    def claim(self, lease_s: float, limit: int = 20) -> list[ClaimedAction]:
        rows = self._run(
            "claim actions", _CLAIM, {"flow": self.flow_id, "lease": lease_s, "limit": limit}
        )
        return [ClaimedAction(str(i), str(a), str(k), dict(p), int(n)) for i, a, k, p, n in rows]

    def done(self, action_id: str) -> None:
        self._run(
            "finish an action",
            "UPDATE engine_alert_actions SET status = 'done', done_at = now(), last_error = NULL"
            " WHERE id = %(id)s",
            {"id": action_id},
        )

    def failed(self, action_id: str, error: str, retry_in_s: float | None) -> None:
        """Record a failed attempt: retried after ``retry_in_s``, or given up (None)."""
        self._run(
            "record a failed action",
            "UPDATE engine_alert_actions SET last_error = %(error)s,"
            " status = CASE WHEN %(give_up)s THEN 'failed' ELSE 'pending' END,"
            " done_at = CASE WHEN %(give_up)s THEN now() END,"
            " next_attempt_at = now() + make_interval(secs => %(delay)s)"
            " WHERE id = %(id)s",
            {
                "id": action_id,
                "error": error[:500],
                "give_up": retry_in_s is None,
                "delay": retry_in_s or 0.0,
            },
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """One rule instance as an operator reads it (``leadflow alerts status``)."""

    flow_id: str
    rule_id: str
    subject: str
    # firing; resolving (firing, healthy for less than resolve_after_s); breaching (not
    # firing, past the threshold for less than trigger_after_s); ok
    state: str
    since: str | None  # ISO 8601 UTC: when it triggered, or when the current run began
    alert_id: str | None  # the firing episode's id (events, webhooks)
    last_alert: str | None  # the last alert.* event's type and time, e.g. "triggered at ..."
    summary: str | None  # that event's reason, e.g. "rejection_rate 45 % > 30 %"
    evaluated_at: str  # when the evaluator last saved it
    actions_pending: int
    actions_failed: int
    last_error: str | None  # of the last episode's last failed or retried action

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


# Per instance, its last alert event (the outbox keeps them, a few per rule and day) and
# the actions of its last episode.
_STATUS = """
SELECT w.flow_id, w.rule_id, w.subject, w.alert, w.updated_at, last.type, last.reason,
       last.data ->> 'id', last.occurred_at,
       count(a.id) FILTER (WHERE a.status = 'pending') AS pending,
       count(a.id) FILTER (WHERE a.status = 'failed') AS failed,
       (array_agg(a.last_error ORDER BY a.created_at DESC)
            FILTER (WHERE a.last_error IS NOT NULL))[1] AS last_error
FROM engine_alert_windows w
LEFT JOIN LATERAL (
    SELECT o.type, o.reason, o.data, o.occurred_at FROM system_event_outbox o
    WHERE o.flow_id = w.flow_id AND o.type IN ('alert.triggered', 'alert.resolved')
      AND o.data ->> 'rule_id' = w.rule_id AND o.data ->> 'subject' = w.subject
    ORDER BY o.occurred_at DESC, o.id DESC LIMIT 1
) last ON true
LEFT JOIN engine_alert_actions a ON a.flow_id = w.flow_id AND a.alert_id = last.data ->> 'id'
WHERE %(flow)s::text IS NULL OR w.flow_id = %(flow)s
GROUP BY w.flow_id, w.rule_id, w.subject, w.alert, w.updated_at,
         last.type, last.reason, last.data, last.occurred_at
ORDER BY w.firing DESC, w.flow_id, w.rule_id, w.subject
"""


def _iso(moment: Any) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat(timespec="seconds")
    return datetime.fromtimestamp(int(moment) / 1000, UTC).isoformat(timespec="seconds")


def _state(alert: dict[str, Any]) -> tuple[str, Any]:
    """The instance's state in words, and the moment it began."""
    firing, since = bool(alert.get("firing")), alert.get("since_ms")
    if firing:
        return ("resolving", since) if since is not None else ("firing", alert.get("triggered_ms"))
    return ("breaching", since) if since is not None else ("ok", None)


def alert_statuses(settings: Settings, flow_id: str | None = None) -> list[AlertStatus]:
    """Every rule instance the evaluators keep (of ``flow_id``, or of every flow), firing
    first. Read from the state tables, so it works with no evaluator running."""
    migrate_state(settings)
    with _translated("read alert status"), connect(settings) as conn:
        rows = conn.execute(_STATUS, {"flow": flow_id}).fetchall()
    out = []
    for flow, rule, subject, alert, updated, kind, reason, alert_id, at, *actions in rows:
        state, since = _state(alert)
        pending, failed, error = actions
        out.append(
            AlertStatus(
                flow_id=str(flow),
                rule_id=str(rule),
                subject=str(subject),
                state=state,
                since=_iso(since),
                alert_id=alert.get("alert_id") or (alert_id if kind else None),
                last_alert=f"{kind.removeprefix('alert.')} at {_iso(at)}" if kind else None,
                summary=reason,
                evaluated_at=str(_iso(updated)),
                actions_pending=int(pending),
                actions_failed=int(failed),
                last_error=error,
            )
        )
    return out
