"""Timing a consume-process-produce loop the same way for every scenario.

The clock starts at the first record handled (group join and
``init_transactions`` stay outside every figure alike) and stops when the worker
has committed the transaction holding the N-th record and closed: until then
the outputs may only be queued in the producer, and counting them as done would
measure ``produce()`` calls, not delivery.
"""

from __future__ import annotations

import time


class RateClock:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def tick(self) -> bool:
        """Count one record; True once the expected number has been handled."""
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        return self.count >= self.expected

    def finish(self) -> None:
        """Stop the clock: call once the last transaction is committed."""
        self.last = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.count >= self.expected

    def rate(self) -> float:
        """Records per second from the first record to ``finish`` (0 if not measured)."""
        elapsed = self.last - self.first
        return self.count / elapsed if self.count and elapsed > 0 else 0.0
