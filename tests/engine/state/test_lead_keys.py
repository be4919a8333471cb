"""Per-lead data keys in Postgres (``engine.state.keys``): made once whoever asks first,
wrapped (never stored clear), gone for good once erased, refused under a wrong master key."""

from __future__ import annotations

import base64
import time

import psycopg
import pytest

from engine.sealing import MasterKey, new_master_key_text
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.keys import LeadKeys, erase_leads, erased_among, search_person

pytestmark = pytest.mark.stack

MASTER = MasterKey(base64.b64decode(new_master_key_text()))
LEADS = ["01JAAAAAAAAAAAAAAAAAAAAAA1", "01JAAAAAAAAAAAAAAAAAAAAAA2"]


def test_a_leads_key_is_made_once_and_every_process_gets_the_same(
    state_settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    first, second = LeadKeys(state_settings, MASTER), LeadKeys(state_settings, MASTER)
    try:
        made = first.ensure("solar", LEADS)
        assert all(made[i] is not None for i in LEADS)
        assert second.ensure("solar", LEADS) == made == second.fetch(LEADS)
        rows = db.execute("SELECT key_id, master_key_id, wrapped FROM engine_lead_keys").fetchall()
        assert sorted(str(r[0]) for r in rows) == LEADS
        assert {r[1] for r in rows} == {MASTER.key_id}
        for key_id, _, wrapped in rows:  # wrapped, never clear
            clear = made[str(key_id)]
            assert isinstance(wrapped, bytes) and clear is not None and clear not in wrapped
        assert second.fetch(["01JNOKEY000000000000000000"]) == {"01JNOKEY000000000000000000": None}
    finally:
        first.close()
        second.close()


def test_an_erased_lead_never_gets_a_key_again(
    state_settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    keys = LeadKeys(state_settings, MASTER)
    try:
        keys.ensure("solar", LEADS)
        with db.transaction(), db.cursor() as cur:
            assert erase_leads(cur, [LEADS[0]]) == 1
            assert erase_leads(cur, [LEADS[0]]) == 0  # idempotent
        fresh = LeadKeys(state_settings, MASTER)
        assert fresh.ensure("solar", LEADS)[LEADS[0]] is None
        assert fresh.fetch(LEADS)[LEADS[1]] is not None
        fresh.close()
        count = db.execute("SELECT count(*) FROM engine_lead_keys").fetchone()
        assert count == (1,)
    finally:
        keys.close()


def test_keys_wrapped_by_another_master_key_are_a_transient_error_not_a_wrong_answer(
    state_settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    maker = LeadKeys(state_settings, MASTER)
    maker.ensure("solar", LEADS)
    maker.close()
    other = LeadKeys(state_settings, MasterKey(bytes(32)))
    try:
        with pytest.raises(StateUnavailableError, match="does not unwrap"):
            other.fetch(LEADS)
    finally:
        other.close()


def test_a_running_process_drops_an_erased_key_from_memory_when_it_hears_the_erasure(
    state_settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A worker keeps keys in memory (no query per lead), yet an erasure committed by
    another process reaches it: the erased key is dropped, the next use reads none. The
    key's 30 s memory bound is far off: only hearing the erasure can pass this."""
    keys = LeadKeys(state_settings, MASTER)
    try:
        made = keys.ensure("solar", LEADS)
        with db.transaction(), db.cursor() as cur:
            erase_leads(cur, [LEADS[0]])
        answers = []
        for _ in range(100):  # the notification arrives at its own pace: look until heard
            answers.append(keys.fetch(LEADS))
            if answers[-1][LEADS[0]] is None:
                break
            time.sleep(0.02)
        assert answers[-1] == {LEADS[0]: None, LEADS[1]: made[LEADS[1]]}
        assert keys.ensure("solar", LEADS)[LEADS[0]] is None  # and never made again
    finally:
        keys.close()


def test_a_process_that_lost_its_connection_forgets_the_keys_it_held(
    state_settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """While no connection listens an erasure cannot be heard: a key held from before
    is not trusted after a reconnect."""
    keys = LeadKeys(state_settings, MASTER)
    try:
        keys.ensure("solar", LEADS)
        assert keys._conn is not None
        keys._conn.close()  # lost: the erasure below is sent while nobody listens
        with db.transaction(), db.cursor() as cur:
            erase_leads(cur, [LEADS[0]])
        assert keys.fetch(LEADS)[LEADS[0]] is None
    finally:
        keys.close()


def test_a_reader_finds_a_person_by_keyed_hash_never_once_erased(
    state_settings: Settings,
    db: psycopg.Connection[tuple[object, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", base64.b64encode(MASTER.secret).decode())
    monkeypatch.delenv("LEADFLOW_MASTER_KEY_FILE", raising=False)
    keys = LeadKeys(state_settings, MASTER)
    try:
        keys.index_person("solar", LEADS[0], ["Ada@Example.com"], ["(512) 555-0123"])
        keys.index_person("roof", LEADS[1], ["ada@example.com "], [])
    finally:
        keys.close()
    assert search_person(db, "email", "ADA@example.com", None, 10) == LEADS[::-1]
    assert search_person(db, "phone", "+1 512 555 0123", None, 10) == [LEADS[0]]
    assert search_person(db, "email", "ada@example.com", "roof", 10) == [LEADS[1]]
    assert search_person(db, "email", "ada@example.com", None, 1) == [LEADS[1]]
    assert search_person(db, "phone", "555-0123", None, 10) == []  # not a phone: no hash
    with db.transaction(), db.cursor() as cur:
        erase_leads(cur, [LEADS[1]])  # the index rows stay until the second phase
    assert search_person(db, "email", "ada@example.com", None, 10) == [LEADS[0]]
    assert erased_among(db, LEADS) == {LEADS[1]}
    # Another master key hashes to other digests; none at all finds nothing.
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    assert search_person(db, "email", "ada@example.com", None, 10) == []
    monkeypatch.delenv("LEADFLOW_MASTER_KEY")
    assert search_person(db, "email", "ada@example.com", None, 10) == []


def test_a_schema_without_state_tables_has_nobody_to_find(
    state_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    url = state_settings.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {state_settings.db_schema}")
        conn.execute(f"SET search_path TO {state_settings.db_schema}")
        assert search_person(conn, "email", "ada@example.com", None, 10) == []
        assert erased_among(conn, LEADS) == set()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the savepoint left it usable
