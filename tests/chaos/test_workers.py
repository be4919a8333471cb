"""The harness's supervisor keeps restarting workers, whatever a single restart does.

No services: the workers are short Python processes that exit at once."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaos import workers
from chaos.workers import Worker, WorkerPool


@dataclass
class RefusedOnce(Worker):
    """A worker whose first restart fails, as a fork refused on a loaded machine would."""

    refusals: int = 1

    def start(self) -> None:
        if self.starts and self.refusals:
            self.refusals -= 1
            raise OSError(11, "Resource temporarily unavailable")
        super().start()


def exiting_worker(tmp_path: Path) -> RefusedOnce:
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    return RefusedOnce("filter", argv, tmp_path / "filter.log", dict(os.environ))


def test_a_restart_that_fails_is_tried_again_and_the_supervisor_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the exception ended the supervisor thread: from then on every worker that
    # died stayed dead, and the run could only report its events as missing.
    monkeypatch.setattr(workers, "RESTART_DELAY_S", 0.01)
    worker = exiting_worker(tmp_path)
    pool = WorkerPool([worker])
    pool.start()
    try:
        deadline = time.monotonic() + 20
        while worker.starts < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop()
    assert worker.starts >= 3, "the supervisor stopped restarting after a failed restart"
    assert worker.refusals == 0
    # Each run's exit is counted once, the refused restart adds none.
    assert worker.exits[:2] == [3, 3]
    assert len(worker.exits) in (worker.starts - 1, worker.starts)
