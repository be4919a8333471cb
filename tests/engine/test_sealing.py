"""Sealed values (``engine.sealing``): the token format, what opens and what does not, which
fields a flow seals, and the master key's settings - all without a service."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from engine.flows import parse_flow
from engine.sealing import (
    ERASED,
    PREFIX,
    UNREADABLE,
    MasterKey,
    MasterKeyError,
    SealingError,
    clear_strings,
    is_sealed,
    key_ids,
    load_master_key,
    new_data_key,
    new_master_key_text,
    open_sealed,
    open_value,
    person_digest,
    require_master_key,
    seal,
    seal_snapshot,
    seal_text,
    unwrap_key,
    wrap_key,
)
from engine.settings import Settings

LEAD = "01JABCDEFGHJKMNPQRSTVWXYZ0"
KEY = new_data_key()
SENSITIVE = frozenset({"ssn", "dob", "income"})


def _lookup(key_id: str) -> bytes | None:
    return KEY if key_id == LEAD else None


def test_a_sealed_value_is_a_prefixed_string_that_opens_to_its_typed_value() -> None:
    for value in ("123-45-6789", 52000, 1.5, True, {"a": [1]}):
        token = seal(KEY, LEAD, value)
        assert token.startswith(f"{PREFIX}{LEAD}:")
        assert "123-45" not in token
        assert open_value(token, _lookup) == value
    # Deterministic per lead (a lead's diffs and replays stay stable), never across leads
    # or values.
    assert seal(KEY, LEAD, "x") == seal(KEY, LEAD, "x")
    assert seal(KEY, LEAD, "x") != seal(KEY, LEAD, "y")
    assert seal(new_data_key(), LEAD, "x") != seal(KEY, LEAD, "x")
    assert seal(KEY, LEAD, 1).rsplit(":", 1)[1][:16] != seal(KEY, LEAD, "1").rsplit(":", 1)[1][:16]


def test_a_value_sealed_for_one_lead_does_not_open_as_anothers() -> None:
    token = seal(KEY, LEAD, "123-45-6789")
    blob = token.rsplit(":", 1)[1]
    with pytest.raises(SealingError):
        open_sealed(KEY, "01JOTHERLEAD00000000000000", blob)
    with pytest.raises(SealingError):
        open_sealed(new_data_key(), LEAD, blob)


def test_a_gone_key_reads_erased_and_a_broken_value_unreadable_never_an_exception() -> None:
    other = "01JOTHERLEAD00000000000000"
    assert open_value(seal(new_data_key(), other, "x"), _lookup) == ERASED
    broken = seal(KEY, LEAD, "x")[:-4] + "AAAA"
    assert open_value(broken, _lookup) == UNREADABLE

    def failing(_: str) -> bytes | None:
        raise RuntimeError("database down")

    assert open_value(seal(KEY, LEAD, "x"), failing) == UNREADABLE


def test_tokens_inside_text_and_nested_values_are_opened() -> None:
    token = seal(KEY, LEAD, "123-45-6789")
    value = {"vars": {"lead.ssn": token}, "request": {"body": f'{{"ssn": "{token}"}}'}}
    assert key_ids(value) == {LEAD}
    assert open_value(value, _lookup) == {
        "vars": {"lead.ssn": "123-45-6789"},
        "request": {"body": '{"ssn": "123-45-6789"}'},
    }


def test_a_snapshot_seals_its_sensitive_fields_and_their_parts_only() -> None:
    snapshot = {
        "lead.id": LEAD,
        "lead.email": "ada@example.com",
        "lead.dob": "1990-02-03",
        "lead.dob.year": 1990,
        "lead.dob.valid": True,
        "lead.income": 52000,
        "lead.ssn": None,
    }
    sealed = seal_snapshot(snapshot, SENSITIVE, lambda v: seal(KEY, LEAD, v))
    assert sealed["lead.email"] == "ada@example.com"
    # The parse flag says whether the value parsed, not who the person is: left clear.
    # Any other boolean (a field's own, another component) may be the person's data.
    assert sealed["lead.dob.valid"] is True
    others = {"lead.income": True, "lead.dob.is_leap": True, "lead.dob.x.valid": True}
    assert all(
        map(is_sealed, seal_snapshot(others, SENSITIVE, lambda v: seal(KEY, LEAD, v)).values())
    )
    assert open_value(sealed, _lookup) == snapshot
    # Sealing twice changes nothing more.
    assert seal_snapshot(sealed, SENSITIVE, lambda v: seal(KEY, LEAD, v)) == sealed


def test_quoted_clear_values_are_sealed_in_text_as_written_or_form_encoded() -> None:
    snapshot = {"lead.dob": "1990-02-03", "lead.income": "52000 usd", "lead.dob.day": 3}
    clears = clear_strings(snapshot, SENSITIVE)
    assert clears == ["1990-02-03", "52000 usd"]  # too short to replace safely: the day
    text = "dob=1990-02-03&income=52000+usd"
    sealed = seal_text(text, clears, lambda v: seal(KEY, LEAD, v))
    assert "1990" not in sealed and "52000" not in sealed
    assert open_value(sealed, _lookup) == "dob=1990-02-03&income=52000 usd"


def test_data_keys_are_wrapped_by_the_master_key_and_bound_to_their_lead() -> None:
    master = MasterKey(base64.b64decode(new_master_key_text()))
    wrapped = wrap_key(master, LEAD, KEY)
    assert KEY not in wrapped
    assert unwrap_key(master, LEAD, wrapped) == KEY
    with pytest.raises(SealingError):
        unwrap_key(master, "01JOTHERLEAD00000000000000", wrapped)
    with pytest.raises(SealingError):
        unwrap_key(MasterKey(bytes(32)), LEAD, wrapped)
    assert repr(master) == f"MasterKey({master.key_id})"  # never the key itself


def test_the_person_index_is_a_keyed_hash_of_the_normalised_value() -> None:
    master = MasterKey(bytes(range(32)))
    email = person_digest(master, "email", " Ada@Example.com ")
    assert email == person_digest(master, "email", "ada@example.com")
    assert email != person_digest(MasterKey(bytes(32)), "email", "ada@example.com")
    assert person_digest(master, "phone", "+1 (512) 555-0147") == person_digest(
        master, "phone", "5125550147"
    )
    assert person_digest(master, "phone", "12") is None


def test_the_master_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    text = new_master_key_text()
    assert load_master_key(Settings(master_key=text)) is not None
    path = tmp_path / "master.key"
    path.write_text(text + "\n")
    from_file = load_master_key(Settings(master_key_file=path))
    assert from_file is not None and from_file.secret == base64.b64decode(text)
    assert load_master_key(Settings()) is None
    with pytest.raises(MasterKeyError, match="32 bytes") as bad:
        load_master_key(Settings(master_key="c2hvcnQ="))
    assert "c2hvcnQ=" not in str(bad.value)
    with pytest.raises(MasterKeyError, match="flow solar declares sensitive fields"):
        require_master_key(Settings(), "solar")


FLOW = """
id: solar
name: Solar
sensitive_fields: [income]
steps:
  - id: web
    name: Web
    kind: source
    settings:
      fields:
        - {name: email, type: email}
        - {name: tax, type: ssn}
        - {name: income, type: number}
"""


def test_a_flow_seals_what_it_declares_ssns_and_dates_of_birth() -> None:
    flow = parse_flow(FLOW)
    assert flow.seals
    assert {"income", "tax", "ssn", "dob", "date_of_birth"} <= flow.sensitive
    assert "email" not in flow.sensitive
    plain = parse_flow(FLOW.replace("sensitive_fields: [income]\n", ""))
    assert not plain.seals


def test_a_reader_without_pii_read_sees_masks_and_markers_never_a_clear_declared_value() -> None:
    from engine.masking import for_reader
    from engine.sealing import reveal

    gone = "01JOTHERLEAD00000000000000"
    value = {
        "lead.ssn": seal(KEY, LEAD, "123-45-6789"),  # a kind the policy masks: opened, masked
        "lead.dob": seal(KEY, LEAD, "1984-07-21"),
        "lead.income": seal(KEY, LEAD, 98765),  # declared, no kind: masked whole
        "lead.email": seal(new_data_key(), gone, "x@y.co"),  # key gone
        "request": {"body": f"income={seal(KEY, LEAD, 98765)}"},
    }
    masked = for_reader(reveal(value, _lookup, sees_pii=False), sees_pii=False)
    assert masked == {
        "lead.ssn": "***-**-6789",
        "lead.dob": "1984-**-**",
        "lead.income": "***",
        "lead.email": ERASED,
        "request": {"body": "income=***"},
    }
    clear = for_reader(reveal(value, _lookup, sees_pii=True), sees_pii=True)
    assert clear["lead.income"] == 98765 and clear["request"]["body"] == "income=98765"
    assert clear["lead.email"] == ERASED
