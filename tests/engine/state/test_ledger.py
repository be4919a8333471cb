"""The cap ledger on real Postgres: exact at the boundary, idempotent per lead, race-free."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from engine.caps import CapSpec
from engine.errors import TransientStepError
from engine.ids import new_lead_id
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import migrate_state
from engine.state.store import StateStore
from engine.steps.cap_checks import CapCheck, cap_checks, recipient_cap_reason

pytestmark = pytest.mark.stack

Db = psycopg.Connection[tuple[Any, ...]]
AT = 1_772_000_000_000  # 2026-02-25T06:13:20Z
SCOPE = "recipient:flow/buyer"


def caps(*specs: CapSpec, at: int = AT) -> list[CapCheck]:
    return cap_checks(SCOPE, specs, at)


def leads(n: int) -> list[str]:
    return [new_lead_id(AT) for _ in range(n)]


def ledger(db: Db) -> dict[str, int]:
    """Ledger rows per counter, checked against the counters: they must always agree."""
    rows = db.execute(
        "SELECT c.cap_key, c.count, count(l.lead_id) FROM engine_cap_counters c"
        " LEFT JOIN engine_cap_ledger l USING (cap_key, window_start)"
        " GROUP BY c.cap_key, c.window_start, c.count"
    ).fetchall()
    assert all(counted == held for _, counted, held in rows), rows
    return {key: int(counted) for key, counted, _ in rows}


def test_a_cap_of_n_takes_n_leads_and_stops_the_next(store: StateStore, db: Db) -> None:
    day = caps(CapSpec(maximum=3))
    first, *others = leads(5)
    assert store.reserve(first, day) is None
    assert [store.reserve(lead, day) for lead in others[:2]] == [None, None]
    full = store.reserve(others[2], day)
    assert full is not None and full.count == 3
    assert recipient_cap_reason(full) == "Daily cap reached (3/3)"
    assert store.reserve(others[3], day) is not None
    assert store.count(day[0]) == 3
    assert ledger(db) == {"recipient:flow/buyer:day@UTC": 3}


def test_a_lead_reserving_again_keeps_its_one_slot_even_when_the_cap_is_full(
    store: StateStore, db: Db
) -> None:
    day = caps(CapSpec(maximum=2))
    a, b = leads(2)
    assert store.reserve(a, day) is None
    assert store.reserve(a, day) is None  # a re-run after a crash
    assert store.count(day[0]) == 1
    assert store.reserve(b, day) is None
    assert store.reserve(a, day) is None  # full now, but the slot is a's own
    assert store.reserve(b, day) is None
    assert ledger(db) == {"recipient:flow/buyer:day@UTC": 2}


def test_release_frees_the_slot_and_is_a_no_op_for_a_lead_without_one(
    store: StateStore, db: Db
) -> None:
    day = caps(CapSpec(maximum=2))
    a, b, c = leads(3)
    store.reserve(a, day)
    store.reserve(b, day)
    assert store.reserve(c, day) is not None
    store.release(b, day)  # b's delivery failed
    assert store.count(day[0]) == 1
    store.release(b, day)  # released twice (a re-run)
    store.release(c, day)  # never held one
    assert store.count(day[0]) == 1
    assert store.reserve(c, day) is None
    assert ledger(db) == {"recipient:flow/buyer:day@UTC": 2}


def test_confirm_marks_the_slot_without_changing_the_count(store: StateStore, db: Db) -> None:
    day = caps(CapSpec(maximum=2))
    (a,) = leads(1)
    store.reserve(a, day)
    store.confirm(a, day)
    store.confirm(a, day)
    row = db.execute("SELECT confirmed_at FROM engine_cap_ledger WHERE lead_id = %s", (a,))
    assert row.fetchone() is not None
    assert db.execute(
        "SELECT count(*) FROM engine_cap_ledger WHERE confirmed_at IS NULL"
    ).fetchone() == (0,)
    assert store.count(day[0]) == 1


def test_each_window_counts_apart(store: StateStore) -> None:
    spec = CapSpec(maximum=1)
    today, tomorrow = caps(spec), caps(spec, at=AT + 86_400_000)
    a, b = leads(2)
    assert store.reserve(a, today) is None
    assert store.reserve(b, today) is not None
    assert store.reserve(b, tomorrow) is None


def test_a_lead_takes_a_slot_in_every_cap_or_in_none(store: StateStore, db: Db) -> None:
    both = caps(CapSpec(maximum=5), CapSpec(maximum=1, duration="hour"))
    a, b = leads(2)
    assert store.reserve(a, both) is None
    full = store.reserve(b, both)
    assert full is not None and full.check.spec.duration == "hour"
    assert ledger(db) == {"recipient:flow/buyer:day@UTC": 1, "recipient:flow/buyer:hour@UTC": 1}


def test_concurrent_workers_never_take_more_than_the_maximum(
    state_settings: Settings, db: Db
) -> None:
    migrate_state(state_settings)
    day = caps(CapSpec(maximum=10))
    contenders = leads(48)
    # Twins: the same lead handled by two workers at once (a rebalance) takes one slot.
    work = [contenders[i : i + 6] + contenders[i : i + 2] for i in range(0, 48, 6)]
    won: list[str] = []
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def worker(mine: list[str]) -> None:
        state = StateStore(state_settings)
        try:
            barrier.wait()
            for lead in mine:
                if state.reserve(lead, day) is None:
                    won.append(lead)
        except BaseException as exc:
            errors.append(exc)
        finally:
            state.close()

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert ledger(db) == {"recipient:flow/buyer:day@UTC": 10}
    held = {row[0] for row in db.execute("SELECT lead_id FROM engine_cap_ledger").fetchall()}
    assert set(won) == held and len(held) == 10


def test_a_dropped_connection_is_reopened_and_the_reservation_goes_through(
    store: StateStore, db: Db
) -> None:
    day = caps(CapSpec(maximum=5))
    a, b = leads(2)
    store.reserve(a, day)
    # As a Postgres restart or a firewall cutting an idle connection would.
    killed = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (f"leadflow-state/{store.settings.db_schema}",),
    ).fetchall()
    assert killed == [(True,)]
    assert store.reserve(b, day) is None
    assert store.count(day[0]) == 2


def test_postgres_down_is_a_transient_error_never_a_silent_pass(state_settings: Settings) -> None:
    nothing_listens = SecretStr("postgresql://leadflow:leadflow@127.0.0.1:1/leadflow")
    nowhere = state_settings.model_copy(update={"database_url": nothing_listens})
    store = StateStore(nowhere)
    with pytest.raises(StateUnavailableError, match="unreachable") as caught:
        store.reserve(new_lead_id(AT), caps(CapSpec(maximum=1)))
    assert isinstance(caught.value, TransientStepError)  # the worker aborts and retries


def test_migrations_apply_once(state_settings: Settings) -> None:
    assert migrate_state(state_settings) == [
        "001_engine_state",
        "002_lead_keys",
        "003_retention_indexes",
        "004_erasure_progress",
        "005_auction_ledger",
        "006_system_event_outbox",
        "007_scheduled_exports",
        "008_alert_state",
    ]
    assert migrate_state(state_settings) == []
