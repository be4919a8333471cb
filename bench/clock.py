"""Timing a consume-process-produce loop the same way for every scenario.

The clock starts at the first record handled (group join and
``init_transactions`` stay outside every figure alike) and stops when the worker
has committed the transaction holding the N-th record and closed: until then
the outputs may only be queued in the producer, and counting them as done would
measure ``produce()`` calls, not delivery.

CPU is timed over the same span (``time.process_time``: every thread of the process,
librdkafka's included): on a shared machine the CPU an event costs is steadier than the
wall-clock rate, which other processes' load moves.
"""

from __future__ import annotations

import time


class RateClock:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0

    def tick(self) -> bool:
        """Count one record; True once the expected number has been handled."""
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        return self.count >= self.expected

    def finish(self) -> None:
        """Stop the clock: call once the last transaction is committed."""
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()

    @property
    def done(self) -> bool:
        return self.count >= self.expected

    def rate(self) -> float:
        """Records per second from the first record to ``finish`` (0 if not measured)."""
        elapsed = self.last - self.first
        return self.count / elapsed if self.count and elapsed > 0 else 0.0

    def cpu_ms_per_event(self) -> float:
        """The process's CPU milliseconds per record over the same span (0 if not measured)."""
        used = self.cpu_last - self.cpu_first
        return used * 1000 / self.count if self.count and used > 0 else 0.0
