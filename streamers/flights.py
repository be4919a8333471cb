"""Rounds in flight: the writes of one round under way, retried, and known durable or not.

The streaming loop (``streamers.streamer``) keeps a window of them: a per-event round's
objects have keys of their own, so the next round's PUTs can start while the last one's
slowest finish, and while the loop fetches, decodes and commits - the writer threads never
wait on any of those. Offsets are committed only for the rounds at the front of the window
that are durable in full, in the order they were read, so a crash still loses nothing; and
since every write is create-only, a round written again after a crash duplicates nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from engine.objects.errors import DestinationError
from streamers.work import Job, Outcome, Round

# What an attempt at a job gives: its outcome, the store's failure, or None (not started:
# the streamer is stopping).
Result = Outcome | DestinationError | None
Submit = Callable[[Job], "Future[Result]"]


@dataclass(eq=False, slots=True)
class Flight:
    """One round: the jobs of its current attempt, and what its finished attempts gave."""

    work: Round
    jobs: list[Job]
    futures: list[Future[Result]]
    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    errors: list[DestinationError] = field(default_factory=list)
    attempt: int = 0
    retry_at: float | None = None  # when the failed jobs go again
    stopped: bool = False  # a job was not started: the round can never be durable
    _next: int = 0  # the current attempt's futures before this one are done

    @classmethod
    def start(cls, work: Round, submit: Submit) -> Flight:
        return cls(work, list(work.jobs), [submit(job) for job in work.jobs])

    def _advance(self) -> None:
        # Futures finish roughly in the order they were submitted (one FIFO pool), so
        # this walks each future once: no scan of the whole round per look.
        while self._next < len(self.futures) and self.futures[self._next].done():
            self._next += 1

    def running(self) -> list[Future[Result]]:
        """The current attempt's futures from the first unfinished one on."""
        self._advance()
        return self.futures[self._next :]

    def unfinished(self) -> int:
        return len(self.running())

    def collect(self) -> bool:
        """True, once, when the current attempt has ended: outcomes kept, failed jobs set
        aside (with their errors) for ``retry``. An unexpected exception of a job (a bug)
        is raised here."""
        if not self.futures or self.running():
            return False
        for job, future in zip(self.jobs, self.futures, strict=True):
            result = future.result()
            if result is None:
                self.stopped = True
            elif isinstance(result, DestinationError):
                self.failed.append(job)
                self.errors.append(result)
            else:
                self.outcomes.append(result)
        self.jobs, self.futures, self._next = [], [], 0
        return True

    def retry(self, submit: Submit) -> None:
        """Run the failed jobs again (they are idempotent: create-only writes)."""
        self.jobs, self.failed, self.errors = self.failed, [], []
        self.futures = [submit(job) for job in self.jobs]
        self.retry_at = None

    @property
    def durable(self) -> bool:
        """Every job of the round has succeeded: its offsets may be committed."""
        return not self.futures and not self.failed and not self.stopped

    def objects(self) -> int:
        return sum(len(outcome.written) for outcome in self.outcomes)
