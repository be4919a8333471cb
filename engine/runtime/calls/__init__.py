"""The external calls steps ask for (``engine.steps.calls.Call``), made over HTTP.

A handler of a calling step never makes the call itself: it hands the step's
``Call`` to a ``CallRunner`` and the step judges the ``Answer``. The runner is
the one place that decides how calls run: ``AsyncCallRunner`` keeps many in
flight on one event loop (``start``) and also answers one at a time (``run``),
so it serves both the one-at-a-time loop and a loop that keeps many leads in flight.

Whatever happens - an answer, a timeout, a refused connection, garbage - comes
back as an ``Answer`` for the step's pure judgement, never as an exception.
"""

from engine.runtime.calls.base import CallRunner, ManyCallRunner
from engine.runtime.calls.exchange import CallLimits, exchange
from engine.runtime.calls.runner import AsyncCallRunner, call_runner

# The one-at-a-time name the handlers and their tests grew up with: ``run`` blocks.
HttpCallRunner = AsyncCallRunner

__all__ = [
    "AsyncCallRunner",
    "CallLimits",
    "CallRunner",
    "HttpCallRunner",
    "ManyCallRunner",
    "call_runner",
    "exchange",
]
