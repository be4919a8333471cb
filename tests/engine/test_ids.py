"""Ids: sortable, and deterministic where replays need them to be."""

from hypothesis import given
from hypothesis import strategies as st

from engine.ids import (
    _DECODE,
    _encode128,
    derived_lead_id,
    event_id,
    id_timestamp_ms,
    is_valid_id,
    new_lead_id,
)


def test_lead_id_carries_its_submission_time() -> None:
    lead_id = new_lead_id(1_764_000_000_123)
    assert is_valid_id(lead_id)
    assert id_timestamp_ms(lead_id) == 1_764_000_000_123


def test_derived_lead_id_is_stable_for_the_same_input_position() -> None:
    a = derived_lead_id(1000, "leadflow.demo.intake", 2, 41)
    assert a == derived_lead_id(1000, "leadflow.demo.intake", 2, 41)
    assert a != derived_lead_id(1000, "leadflow.demo.intake", 2, 42)


def test_event_ids_sort_in_timeline_order() -> None:
    lead = new_lead_id(5000)
    ids = [event_id(lead, 5000, step, seq) for step in range(3) for seq in range(2)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 6


def test_event_ids_of_later_leads_sort_later() -> None:
    early, late = new_lead_id(1000), new_lead_id(2000)
    assert event_id(early, 1000, 5, 0) < event_id(late, 2000, 0, 0)


def test_event_id_is_deterministic() -> None:
    lead = new_lead_id(7)
    assert event_id(lead, 7, 1, 0) == event_id(lead, 7, 1, 0)


def test_garbage_is_not_an_id() -> None:
    assert not is_valid_id("not-an-id")
    assert not is_valid_id("Z" * 26)  # overflows 128 bits


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_every_128_bit_value_is_26_crockford_digits_that_read_back(value: int) -> None:
    text = _encode128(value)
    assert len(text) == 26 and is_valid_id(text)
    assert sum(_DECODE[c] << (5 * i) for i, c in enumerate(reversed(text))) == value


def test_a_leads_feedback_sorts_after_its_steps_and_in_the_order_it_was_given() -> None:
    from engine.ids import feedback_event_id

    lead = new_lead_id(1_764_000_000_000)
    last_step = event_id(lead, 1_764_000_000_000, 254, 255, 256)
    same_ms = [feedback_event_id(lead, 1_764_000_000_000, offset, 0) for offset in (7, 3)]
    later = feedback_event_id(lead, 1_764_000_000_001, 2, 0)
    assert last_step < min(same_ms)
    assert max(same_ms) < later
    # Two reports in one millisecond: the one that came first in the log sorts first.
    assert same_ms[1] < same_ms[0]
    received, processed = (feedback_event_id(lead, 1_764_000_000_000, 7, s) for s in (0, 1))
    assert received < processed
    # 32,768 reports of one partition in one millisecond each keep their own ids.
    many = {feedback_event_id(lead, 1_764_000_000_000, o, s) for o in range(32768) for s in (0, 1)}
    assert len(many) == 65536
