"""The export worker's and scheduler's shared loop: a Postgres outage or an unexpected
error is logged and waited out, never raised, until the loop is told to stop."""

from __future__ import annotations

import threading

import structlog

from engine.settings import Settings
from projectors.errors import StoreUnavailableError
from projectors.exports.runner import poll_until_stopped


class _StopAfterWaits(threading.Event):
    """Sets itself on its ``n``-th wait: the loop's backoff ends the test, not a clock."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self._n = n

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self._n:
            self.set()
        return self.is_set()


def test_an_outage_then_a_failure_are_logged_and_waited_out_not_raised(
    settings: Settings,
) -> None:
    errors: list[Exception] = [StoreUnavailableError("postgres down"), ValueError("odd")]

    def migrate(_: Settings) -> None:
        raise errors.pop(0)

    def never_reached(*_: object) -> None:
        raise AssertionError("run_once called before the migration succeeded")

    stop = _StopAfterWaits(2)
    with structlog.testing.capture_logs() as logs:
        poll_until_stopped(
            settings,
            stop,
            role="export worker",
            migrate=migrate,
            run_once=never_reached,
            poll_s=1.0,
            unavailable=(StoreUnavailableError,),
            clean=lambda exc: str(exc).replace("odd", "[redacted]"),
        )
    assert [(e["event"], e["log_level"], e["error"]) for e in logs] == [
        ("export worker waiting for postgres", "warning", "postgres down"),
        ("export worker failed", "error", "[redacted]"),
    ]
    assert logs[1]["error_type"] == "ValueError"
    assert stop.waits == [5.0, 5.0]  # the outage backoff, not the idle poll
