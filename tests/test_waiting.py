"""``tests.waiting.wait_until``: returns what it waited for, or fails saying what, how long
and what it last saw."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import WaitTimeout, wait_until


def test_it_returns_the_first_value_that_satisfies_the_condition() -> None:
    counter = itertools.count()
    found = wait_until(lambda: next(counter), 5, "a count of 3", until=lambda n: n >= 3, every=0)
    assert found == 3


def test_a_condition_that_already_holds_needs_no_time() -> None:
    assert wait_until(lambda: "ready", 0, "readiness") == "ready"


def test_the_timeout_says_what_it_waited_for_how_long_and_what_it_last_saw() -> None:
    counter = itertools.count()
    with pytest.raises(WaitTimeout) as raised:
        wait_until(lambda: next(counter), 0.05, "7 leads completed", until=lambda n: n >= 10**9)
    message = str(raised.value)
    assert message.startswith("timed out after 0.05 s waiting for 7 leads completed (last seen: ")
    last_seen = int(message.removesuffix(")").rsplit(" ", 1)[1])
    assert last_seen >= 1  # checked more than once, the last value shown
    assert isinstance(raised.value, AssertionError)  # a failed test, not an error


def test_a_long_last_value_is_cut_and_counted() -> None:
    with pytest.raises(WaitTimeout, match=r"\.\.\. \(4,890 characters, 1,000 items\)\)$"):
        wait_until(lambda: list(range(1000)), 0, "an empty list", until=lambda v: not v)


def test_a_summary_can_stand_for_the_last_value() -> None:
    events = [{"type": "source.accepted"}] * 3
    with pytest.raises(
        WaitTimeout, match=r"waiting for 3 leads completed \(last seen: 0 completed\)$"
    ):
        wait_until(
            lambda: events,
            0,
            "3 leads completed",
            until=lambda evs: len([e for e in evs if e["type"] == "flow.completed"]) >= 3,
            show=lambda evs: f"{sum(e['type'] == 'flow.completed' for e in evs)} completed",
        )


def test_an_error_in_the_check_is_not_retried() -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise ValueError("the check itself is wrong")

    with pytest.raises(ValueError, match="the check itself is wrong"):
        wait_until(broken, 5, "anything")
    assert calls == [1]
