"""The one way a test waits for something the engine does in the background.

Workers, projectors and streamers run in threads or processes, so a test polls for their
effect. When that never comes, the failure must say what was awaited, for how long, and
what was last seen, so a slow machine and a lost event read differently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized
from typing import Any, TypeVar

T = TypeVar("T")

SHOWN_CHARS = 300  # of the last value's repr in a timeout message


class WaitTimeout(AssertionError):
    """What was awaited did not happen in time (an AssertionError: the test fails, not errs)."""


def _shown(value: object, show: Callable[[Any], object] | None) -> str:
    """The last value for a timeout message: ``show``'s summary as written, else its repr, cut."""
    text = repr(value) if show is None else str(show(value))
    if len(text) <= SHOWN_CHARS:
        return text
    size = f", {len(value):,} items" if isinstance(value, Sized) else ""
    return f"{text[:SHOWN_CHARS]}... ({len(text):,} characters{size})"


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    until: Callable[[T], bool] = bool,
    every: float = 0.1,
    show: Callable[[T], object] | None = None,
) -> T:
    """Call ``check`` every ``every`` seconds until ``until`` holds for its value; return it.

    ``check`` runs at least once, and once more at the deadline, so a short timeout never
    fails a condition that already holds. An exception from ``check`` is not retried: it
    is the test's failure, not a reason to wait. On timeout, :class:`WaitTimeout` names
    ``what``, the timeout and the last value ``check`` returned (``show(value)`` when a
    summary says more than the value itself, e.g. a count of a list of events).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for {what}"
                f" (last seen: {_shown(value, show)})"
            )
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
