"""The chaos checker on crafted data: it must see a dropped, a duplicated, an unexpected or a
mistyped event, a dead-letter mismatch and a stuck group - or a passing run proves nothing."""

from __future__ import annotations

from chaos.invariants import check_dead_letters, check_sink, lead_sequences_ok, stuck_groups

EXPECTED = {"E1": "source.submitted", "E2": "source.accepted", "E3": "flow.completed"}


def test_every_event_exactly_once_passes() -> None:
    check = check_sink(
        "postgres", EXPECTED, [("E3", "flow.completed"), *list(EXPECTED.items())[:2]]
    )
    assert check.ok and check.found == 3


def test_a_dropped_event_is_lost() -> None:
    check = check_sink("s3", EXPECTED, list(EXPECTED.items())[:2])
    assert not check.ok
    assert check.lost == ["E3"]


def test_a_duplicated_event_is_caught() -> None:
    check = check_sink("azure_blob", EXPECTED, [*EXPECTED.items(), ("E2", "source.accepted")])
    assert not check.ok
    assert check.duplicated == ["E2"] and not check.lost


def test_an_event_nobody_expected_and_a_wrong_type_are_caught() -> None:
    found = [("E1", "source.submitted"), ("E2", "source.rejected"), ("E3", "flow.completed")]
    check = check_sink("kafka topics", EXPECTED, [*found, ("E9", "filter.passed")])
    assert check.unexpected == ["E9"]
    assert check.wrong_type == ["E2"]


def test_an_outcome_that_may_be_either_accepts_each_and_nothing_else() -> None:
    either = {"E1": "recipient.delivered|recipient.error"}
    assert check_sink("postgres", either, [("E1", "recipient.error")]).ok
    assert check_sink("postgres", either, [("E1", "recipient.delivered")]).ok
    assert check_sink("postgres", either, [("E1", "recipient.failed")]).wrong_type == ["E1"]


def test_dead_letters_must_be_exactly_the_poison() -> None:
    assert check_dead_letters([b"a", b"b"], [b"b", b"a"]).ok
    missing = check_dead_letters([b"a", b"b"], [b"a"])
    assert not missing.ok and missing.missing == 1
    twice = check_dead_letters([b"a"], [b"a", b"a", b"x"])
    assert not twice.ok and twice.extra == 2


def test_stuck_groups_are_the_ones_with_lag() -> None:
    assert stuck_groups({"g1": 0, "g2": 3}) == {"g2": 3}


def test_a_lead_missing_or_repeating_an_event_has_a_wrong_timeline() -> None:
    expected = {"L1": ["E1", "E2"], "L2": ["F1", "F2"], "L3": ["G1"]}
    found = {"L1": ["E2", "E1"], "L2": ["F1", "F2", "F2"]}
    assert lead_sequences_ok(expected, found) == ["L2", "L3"]
