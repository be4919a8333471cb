"""Typed fields: what a submitted value becomes in the snapshot."""

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, get_args

import pytest

from engine.fields import (
    COMPONENTS,
    MAX_TEXT,
    PARSERS,
    format_moment,
    parse_boolean,
    parse_date,
    parse_datetime,
    parse_email,
    parse_number,
    parse_phone,
    parse_postal_code,
    parse_ssn,
    parse_state,
    parse_string,
    read_moment,
)
from engine.steps.source import FieldType


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
    assert parsed.components == {
        "valid": True,
        "prefix": "1",
        "country_code": "US",
        "area": "512",
        "exchange": "555",
        "line": "0123",
        "is_tollfree": False,
    }
    assert parsed.problem is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("512-555-0123 h", "home"),
        ("512-555-0123 (w)", "work"),
        ("5125550123c", "mobile"),
        ("512.555.0123 m", "mobile"),
    ],
)
def test_phone_type_comes_from_a_trailing_hint(raw: str, kind: str) -> None:
    parsed = parse_phone(raw)
    assert parsed.value == "5125550123"
    assert parsed.components["type"] == kind


def test_phone_without_a_hint_has_no_type() -> None:
    assert "type" not in parse_phone("5125550123").components


@pytest.mark.parametrize("raw", ["512-555-0123 x44", "512 555 0123 ext. 44", "5125550123 Ext 44"])
def test_phone_extension_is_a_component_not_part_of_the_number(raw: str) -> None:
    parsed = parse_phone(raw)
    assert (parsed.value, parsed.components["extension"]) == ("5125550123", "44")


def test_invalid_phone_keeps_its_type_hint() -> None:
    parsed = parse_phone("555-0123 (m)")
    assert parsed.components == {"valid": False, "type": "mobile"}


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


def test_number_accepts_decimal_text_only() -> None:
    assert parse_number(" 1.5 ").value == 1.5
    assert parse_number("1e3").value == 1000.0
    assert parse_number(42).value == 42.0
    for raw in ["nan", "inf", "1_000", "0x10", "", "1,000"]:
        assert parse_number(raw).problem == "expected a number", raw
    assert parse_number(True).problem == "expected a number, got a boolean"
    assert parse_number(10**400).problem == "expected a number"


def test_text_longer_than_the_limit_is_cut_and_flagged() -> None:
    parsed = parse_string("a" * (MAX_TEXT + 1))
    assert parsed.value == "a" * MAX_TEXT
    assert parsed.problem == f"longer than {MAX_TEXT} characters"


def test_an_email_longer_than_mail_servers_accept_is_invalid() -> None:
    assert parse_email("a" * 250 + "@example.com").problem == "not an email address"


# --- dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2024-01-15", "2024-01-15"),
        ("01/15/2024", "2024-01-15"),
        ("1/5/2024", "2024-01-05"),
        ("2024-01-15T23:30:00-06:00", "2024-01-15"),  # the date as written
        (1_705_329_045_123, "2024-01-15"),  # epoch ms: in UTC
        ("1705329045123", "2024-01-15"),
        (" 2024-01-15 ", "2024-01-15"),
    ],
)
def test_date_formats(raw: Any, value: str) -> None:
    parsed = parse_date(raw)
    assert parsed.problem is None
    assert parsed.value == value
    year, month, day = map(int, value.split("-"))
    assert parsed.components == {"valid": True, "year": year, "month": month, "day": day}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2024-01-15T09:30:00-06:00", "2024-01-15T15:30:00.000Z"),
        ("2024-01-15t15:30:00.123456z", "2024-01-15T15:30:00.123Z"),
        ("2024-01-15 15:30", "2024-01-15T15:30:00.000"),  # no zone: a wall-clock time
        ("2024-01-15", "2024-01-15T00:00:00.000"),
        ("01/15/2024", "2024-01-15T00:00:00.000"),
        (1_705_329_045_123, "2024-01-15T14:30:45.123Z"),
        ("2024-01-15T23:30:00-06:00", "2024-01-16T05:30:00.000Z"),
    ],
)
def test_datetime_formats_normalise_to_utc(raw: Any, value: str) -> None:
    parsed = parse_datetime(raw)
    assert parsed.problem is None
    assert parsed.value == value
    assert parsed.components["valid"] is True
    assert parsed.components["day"] == int(value[8:10])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("2024-02-30", "not a calendar date: day is out of range for month"),
        ("02/30/2024", "not a calendar date: day is out of range for month"),
        ("13/01/2024", "not a calendar date: month must be in 1..12"),
        ("2024-01-15T25:00", "not a calendar date: hour must be in 0..23"),
        (
            "tomorrow",
            "expected YYYY-MM-DD, MM/DD/YYYY, ISO 8601 date and time, or epoch milliseconds",
        ),
        (
            "20240115",
            "expected YYYY-MM-DD, MM/DD/YYYY, ISO 8601 date and time, or epoch milliseconds",
        ),
        (
            "1705329045",
            "expected YYYY-MM-DD, MM/DD/YYYY, ISO 8601 date and time, or epoch milliseconds",
        ),
        (10**20, "epoch milliseconds out of range"),
        (True, "expected a date, got bool"),
        ({"y": 2024}, "expected a date, got dict"),
    ],
)
def test_invalid_dates_say_what_was_expected(raw: Any, problem: str) -> None:
    for parse in (parse_date, parse_datetime):
        parsed = parse(raw)
        assert parsed.problem == problem
        assert parsed.components == {"valid": False}


def test_an_invalid_date_is_kept_as_text() -> None:
    assert parse_date("tomorrow").value == "tomorrow"
    assert parse_date({"y": 2024}).value is None


def test_read_moment_tells_dates_wall_clock_times_and_instants_apart() -> None:
    assert read_moment("2024-01-15") == date(2024, 1, 15)
    assert read_moment("2024-01-15T10:00") == datetime(2024, 1, 15, 10, 0)
    assert read_moment("2024-01-15T10:00+02:00") == datetime(
        2024, 1, 15, 10, 0, tzinfo=timezone(timedelta(hours=2))
    )
    assert read_moment(0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_format_moment_round_trips_through_read_moment() -> None:
    for moment in [
        date(1990, 4, 15),
        datetime(2024, 1, 15, 14, 30, 45, 123000, tzinfo=UTC),
        datetime(2024, 1, 15, 14, 30, 45, 123000),
    ]:
        assert read_moment(format_moment(moment)) == moment


# --- SSN -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["123-45-6789", "123 45 6789", "123456789", 123456789])
def test_ssn_is_masked_to_its_last_four(raw: Any) -> None:
    parsed = parse_ssn(raw)
    assert parsed.problem is None
    assert parsed.value == "***-**-6789"
    assert parsed.components == {"valid": True, "masked": "***-**-6789", "last_four": "6789"}


def test_ssn_sent_as_a_number_gets_its_leading_zero_back() -> None:
    assert parse_ssn(12345678).components["last_four"] == "5678"
    assert parse_ssn(12345678).problem is None


@pytest.mark.parametrize(
    "raw", ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"]
)
def test_ssn_numbers_never_issued_are_invalid_but_still_masked(raw: str) -> None:
    parsed = parse_ssn(raw)
    assert parsed.problem is not None and parsed.problem.startswith("not a valid SSN")
    assert parsed.components["valid"] is False
    assert parsed.value == parsed.components["masked"] == f"***-**-{raw[-4:]}"


def test_ssn_of_the_wrong_length_is_masked_whole() -> None:
    parsed = parse_ssn("1234-5678")
    assert parsed.problem == "expected 9 digits, got 8"
    assert parsed.value == parsed.components["masked"] == "****-****"


def test_ssn_of_the_wrong_type() -> None:
    assert parse_ssn(True).problem == "expected a social security number, got bool"
    assert parse_ssn(["123-45-6789"]).value is None


# --- the type table --------------------------------------------------------------

EXAMPLES: dict[str, list[Any]] = {
    "string": ["x"],
    "email": ["a@example.com", "nope"],
    "phone": ["512-555-0123 x4 (m)", "12"],
    "state": ["TX", "Atlantis"],
    "postal_code": ["78701-1234", "x"],
    "boolean": ["yes"],
    "number": ["4"],
    "date": ["2024-01-15", "x"],
    "datetime": ["2024-01-15T10:00Z", "x"],
    "ssn": ["123-45-6789", "1"],
}


def test_every_flow_field_type_has_a_parser_and_a_component_list() -> None:
    assert set(get_args(FieldType)) == set(PARSERS) == set(COMPONENTS) == set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_parsers_produce_only_the_components_they_declare(kind: str) -> None:
    for raw in EXAMPLES[kind]:
        assert set(PARSERS[kind](raw).components) <= COMPONENTS[kind]
