"""The source's admission on real Postgres: duplicates by the order rule, flow and source caps."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import psycopg
import pytest

from engine.caps import CapSpec
from engine.ids import new_lead_id
from engine.settings import Settings
from engine.state.store import DuplicateCheck, StateStore
from engine.steps.cap_checks import cap_checks, flow_scope, source_cap_reason
from engine.steps.duplicates import LeadOrder, duplicate_reason, fingerprint
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

Db = psycopg.Connection[tuple[Any, ...]]
FLOW = "solar"
DAY = 86_400_000


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def lead(submitted_ms: int) -> LeadOrder:
    return LeadOrder(submitted_ms, new_lead_id(submitted_ms))


def same_email(email: str = "ada@example.com", window_days: int = 30) -> DuplicateCheck:
    fp = fingerprint(FLOW, {"lead.email": email}, ["email"])
    assert fp is not None
    return DuplicateCheck(FLOW, fp, window_days)


def test_a_second_lead_with_the_same_email_within_the_window_is_rejected(store: StateStore) -> None:
    first = lead(at("2026-03-01T23:30:00+00:00"))
    second = lead(at("2026-03-20T08:00:00+00:00"))
    assert store.admit(first, [], same_email()).admitted
    verdict = store.admit(second, [], same_email())
    assert verdict.duplicate_of == first
    assert duplicate_reason(verdict.duplicate_of) == "Duplicate: previously submitted 2026-03-01"
    # Another email is no duplicate; the window is per flow's setting.
    assert store.admit(lead(second.submitted_ms), [], same_email("bob@example.com")).admitted


def test_a_lead_outside_the_window_is_accepted(store: StateStore) -> None:
    first = lead(at("2026-03-01T12:00:00+00:00"))
    assert store.admit(first, [], same_email(window_days=7)).admitted
    assert store.admit(lead(first.submitted_ms + 7 * DAY), [], same_email(window_days=7)).admitted
    assert not store.admit(lead(first.submitted_ms + DAY), [], same_email(window_days=7)).admitted


def test_the_same_lead_processed_again_is_not_its_own_duplicate(store: StateStore, db: Db) -> None:
    first = lead(at("2026-03-01T12:00:00+00:00"))
    for _ in range(3):  # a crash before the Kafka commit, a retry, a replay
        assert store.admit(first, [], same_email()).admitted
    rows = db.execute("SELECT lead_id, octet_length(fingerprint) FROM engine_lead_fingerprints")
    assert rows.fetchall() == [(first.lead_id, 32)]  # the hash only, never the email


def test_leads_processed_in_reverse_order_never_reject_the_earlier_one(store: StateStore) -> None:
    earlier = lead(at("2026-03-01T12:00:00+00:00"))
    later = lead(earlier.submitted_ms + DAY)
    # The later lead comes first (another partition was ahead): nothing is known before it.
    assert store.admit(later, [], same_email()).admitted
    assert store.admit(earlier, [], same_email()).admitted
    # A replay of the later lead decides as its first run did (its own row says: admitted).
    assert store.admit(later, [], same_email()).admitted
    # In submission order, the later one is the duplicate.
    bob_first, bob_later = lead(earlier.submitted_ms), lead(later.submitted_ms)
    assert store.admit(bob_first, [], same_email("bob@example.com")).admitted
    assert store.admit(bob_later, [], same_email("bob@example.com")).duplicate_of == bob_first
    # Same millisecond: the lead id decides.
    ms = earlier.submitted_ms + 5
    low, high = sorted([lead(ms), lead(ms)])
    assert store.admit(high, [], same_email("cy@example.com")).admitted
    assert store.admit(low, [], same_email("cy@example.com")).admitted
    assert store.admit(lead(ms + 1), [], same_email("cy@example.com")).duplicate_of == high


def test_a_matching_lead_waits_for_an_earlier_one_still_being_admitted(
    state_settings: Settings, store: StateStore, db: Db
) -> None:
    """Two workers at once: the later lead must not slip in while the earlier one's
    transaction has looked and not yet committed (the fingerprint lock)."""
    base = at("2026-03-01T12:00:00+00:00")
    day_cap = cap_checks(flow_scope(FLOW), [CapSpec(maximum=9)], base)
    assert store.admit(lead(base), day_cap, same_email("someone@x.io")).admitted
    earlier, later = lead(base + 1), lead(base + 2)
    verdicts: dict[str, Any] = {}

    def admit(one: LeadOrder, checks: list[Any]) -> None:
        state = StateStore(state_settings)
        verdicts[one.lead_id] = state.admit(one, checks, same_email())
        state.close()

    def waiting() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (f"leadflow-state/{state_settings.db_schema}",),
        ).fetchone()
        return int(row[0]) if row else 0

    blocker = psycopg.connect(
        state_settings.database_url.get_secret_value(),
        options=f"-c search_path={state_settings.db_schema}",
    )
    first = threading.Thread(target=admit, args=(earlier, day_cap), daemon=True)
    second = threading.Thread(target=admit, args=(later, []), daemon=True)
    try:
        # Hold the cap counter: the earlier lead stops after its duplicate check, uncommitted.
        blocker.execute("SELECT 1 FROM engine_cap_counters FOR UPDATE")
        first.start()
        wait_until(waiting, 10, "the earlier lead to wait on the cap counter", every=0.01)
        second.start()
        second.join(0.5)
        later_decided_early = not second.is_alive()
    finally:
        blocker.rollback()
        blocker.close()
    first.join(10)
    second.join(10)
    assert not later_decided_early, "the later lead decided while the earlier one was undecided"
    assert verdicts[earlier.lead_id].admitted
    assert verdicts[later.lead_id].duplicate_of == earlier


def test_flow_and_source_caps_count_admitted_leads_only(store: StateStore, db: Db) -> None:
    day = at("2026-03-01T12:00:00+00:00")
    flow_cap = cap_checks(flow_scope(FLOW), [CapSpec(maximum=2)], day)
    source_cap = cap_checks(f"source:{FLOW}/web", [CapSpec(maximum=5)], day)
    checks = flow_cap + source_cap
    ada, ada_again, bob, cy, dee = (lead(day + i) for i in range(5))
    assert store.admit(ada, checks, same_email("ada@x.io")).admitted
    assert store.admit(ada_again, checks, same_email("ada@x.io")).duplicate_of == ada
    assert store.admit(bob, checks, same_email("bob@x.io")).admitted  # the duplicate took no slot
    capped = store.admit(cy, checks, same_email("cy@x.io")).capped
    assert capped is not None
    assert source_cap_reason(capped) == "Cap reached: Daily flow cap (2/2)"
    assert store.admit(ada, checks, same_email("ada@x.io")).admitted  # a re-run keeps its slot
    assert store.count(flow_cap[0]) == 2 and store.count(source_cap[0]) == 2
    # A capped lead left nothing behind: a later lead with its email is no duplicate of it.
    assert store.admit(
        dee, cap_checks(flow_scope(FLOW), [CapSpec(maximum=9)], day + DAY), same_email("cy@x.io")
    ).admitted
    unconfirmed = db.execute("SELECT count(*) FROM engine_cap_ledger WHERE confirmed_at IS NULL")
    assert unconfirmed.fetchone() == (0,)  # the source's slots are final at once
