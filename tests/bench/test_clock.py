"""The bench clock's CPU per record (``bench.clock.RateClock``): the process's CPU over the
same span as the rate, from the first record to ``finish``."""

from __future__ import annotations

import time

from bench.clock import RateClock


def test_cpu_per_record_is_the_cpu_spent_from_the_first_record_to_finish() -> None:
    clock = RateClock(3)
    assert clock.cpu_ms_per_event() == 0.0  # nothing measured yet
    sum(range(200_000))  # before the first record: not counted
    before = time.process_time()
    assert [clock.tick(), clock.tick(), clock.tick()] == [False, False, True]
    sum(range(2_000_000))  # CPU spent on the records
    clock.finish()
    after = time.process_time()
    assert before <= clock.cpu_first <= clock.cpu_last <= after
    spent_ms = (clock.cpu_last - clock.cpu_first) * 1000
    assert spent_ms > 0 and clock.cpu_ms_per_event() == spent_ms / 3
