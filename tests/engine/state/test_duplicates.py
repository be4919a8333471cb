"""Duplicate rules as plain values: fingerprints, the order that says which lead came first."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.steps.duplicates import DAY_MS, LeadOrder, duplicate_reason, earlier_match, fingerprint

FIELDS = ["email", "phone_1"]
ADA = {"lead.email": "ada@example.com", "lead.phone_1": "5125550123", "lead.state": "TX"}


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_fingerprint_is_a_hash_of_the_normalised_values_of_all_duplicate_fields() -> None:
    fp = fingerprint("solar", ADA, FIELDS)
    assert fp is not None and len(fp) == 32
    assert b"ada" not in fp and b"5125550123" not in fp
    # Case and surrounding space do not tell leads apart; field order does not matter.
    shouting = {**ADA, "lead.email": "  ADA@Example.com "}
    assert fingerprint("solar", shouting, list(reversed(FIELDS))) == fp
    assert fingerprint("solar", ADA, ["lead.email", "lead.phone_1"]) == fp
    # Other fields do not take part; every duplicate field does.
    assert fingerprint("solar", {**ADA, "lead.state": "CA"}, FIELDS) == fp
    assert fingerprint("solar", {**ADA, "lead.phone_1": "5125550199"}, FIELDS) != fp
    assert fingerprint("solar", {"lead.email": "ada@example.com"}, FIELDS) != fp
    # The same person in another flow is unrelated.
    assert fingerprint("wind", ADA, FIELDS) != fp


def test_a_lead_without_any_duplicate_field_has_no_fingerprint() -> None:
    assert fingerprint("solar", {"lead.state": "TX", "lead.email": None}, FIELDS) is None


def test_the_earlier_lead_is_the_first_by_submission_time_then_lead_id() -> None:
    a = LeadOrder(1_000, "01B")
    b = LeadOrder(1_000, "01C")  # same millisecond: the lead id decides
    c = LeadOrder(2_000, "01A")
    assert earlier_match(b, [a, c], window_days=1) == a
    assert earlier_match(a, [b, c], window_days=1) is None  # later leads never count
    assert earlier_match(c, [a, b], window_days=1) == b  # the most recent earlier one
    # Two matching leads can never both be the other's duplicate.
    assert (earlier_match(a, [b], 1) is None) != (earlier_match(b, [a], 1) is None)


def test_a_lead_is_never_its_own_duplicate() -> None:
    lead = LeadOrder(5_000, "01X")
    assert earlier_match(lead, [lead], window_days=30) is None


def test_the_window_reaches_back_exactly_window_days_exclusive() -> None:
    lead = LeadOrder(100 * DAY_MS, "01Z")
    just_inside = LeadOrder(lead.submitted_ms - 7 * DAY_MS + 1, "01Y")
    on_the_edge = LeadOrder(lead.submitted_ms - 7 * DAY_MS, "01Y")
    assert earlier_match(lead, [just_inside], window_days=7) == just_inside
    assert earlier_match(lead, [on_the_edge], window_days=7) is None


def test_the_reason_gives_the_earlier_leads_submission_date_in_utc() -> None:
    late_evening_in_chicago = at("2026-03-01T21:30:00-06:00")  # 2026-03-02 in UTC
    reason = duplicate_reason(LeadOrder(late_evening_in_chicago, "01A"))
    assert reason == "Duplicate: previously submitted 2026-03-02"
    assert datetime.fromtimestamp(late_evening_in_chicago / 1000, UTC).day == 2
