"""Typed fields: what a submitted value becomes in the snapshot."""

import pytest

from engine.fields import parse_boolean, parse_email, parse_phone, parse_postal_code, parse_state


def test_email_is_lowercased_with_its_domain() -> None:
    parsed = parse_email("  Ada.Lovelace@Example.COM ")
    assert parsed.value == "ada.lovelace@example.com"
    assert parsed.components == {"valid": True, "domain": "example.com"}
    assert parsed.problem is None


@pytest.mark.parametrize("raw", ["ada@", "not an email", "a@b", ""])
def test_malformed_email_is_invalid(raw: str) -> None:
    parsed = parse_email(raw)
    assert parsed.components["valid"] is False
    assert parsed.problem == "not an email address"


def test_email_of_the_wrong_type_names_the_type() -> None:
    assert parse_email(12345).problem == "expected an email address, got int"


def test_phone_keeps_digits_and_components() -> None:
    parsed = parse_phone("+1 (512) 555-0123")
    assert parsed.value == "5125550123"
    assert parsed.components["area"] == "512"
    assert parsed.components["exchange"] == "555"
    assert parsed.components["valid"] is True
    assert parsed.components["is_tollfree"] is False


def test_tollfree_phone_is_recognised() -> None:
    assert parse_phone("800-555-0199").components["is_tollfree"] is True


def test_short_phone_says_how_many_digits() -> None:
    assert parse_phone("555-12").problem == "expected 10 digits, got 5"


def test_state_accepts_codes_and_names() -> None:
    assert parse_state("tx").value == "TX"
    assert parse_state("New Mexico").value == "NM"
    assert parse_state("Atlantis").problem == "not a US state"


def test_postal_code_with_plus4() -> None:
    parsed = parse_postal_code("78701-1234")
    assert parsed.components == {"valid": True, "zip5": "78701", "plus4": "1234"}


@pytest.mark.parametrize(
    ("raw", "value"), [(True, True), ("yes", True), ("0", False), ("off", False)]
)
def test_boolean_spellings(raw: object, value: bool) -> None:
    assert parse_boolean(raw).value is value


def test_boolean_rejects_anything_else() -> None:
    assert parse_boolean("maybe").problem == "expected true or false"
