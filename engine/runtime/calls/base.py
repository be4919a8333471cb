"""What a call runner promises its users (the handlers, and the loop that keeps leads in flight)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.steps.calls import Answer, Call


class CallRunner(Protocol):
    """Makes the calls steps ask for, one at a time; never raises for what the service did."""

    def run(self, call: Call) -> Answer: ...

    def close(self) -> None: ...


class ManyCallRunner(CallRunner, Protocol):
    """A runner that also keeps calls in flight while its caller goes on (``start``)."""

    def start(
        self,
        calls: list[Call],
        done: Callable[[list[Answer]], None],
        *,
        window_ms: int | None = None,
    ) -> None: ...

    def in_flight(self) -> int: ...
