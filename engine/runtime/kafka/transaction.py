"""A transactional producer that reports its transactions: commit time, and aborts by cause.

The begin / send offsets / commit / abort-and-rewind logic itself is the step loop's
(``engine.runtime.step_loop``) for now; this is the hook that meters it without
touching that logic: librdkafka's ``Producer`` subclassed, only ``commit_transaction``
and ``abort_transaction`` overridden. ``produce`` stays librdkafka's C method, so the
per-record path costs nothing more.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer

# The cause of an abort that happened while no error was being handled: in the step
# loop, partitions lost in a rebalance (their offsets belong to another member now).
NO_EXCEPTION = "no_exception"


class TransactionMetrics(Protocol):
    """Where a metered producer reports (``engine.runtime.kafka.metrics.WorkerMetrics``)."""

    def transaction_committed(self, seconds: float) -> None: ...

    def transaction_aborted(self, cause: str) -> None: ...


class MeteredProducer(Producer):
    """A ``Producer`` whose transaction commits are timed and whose aborts are counted."""

    def __init__(self, config: dict[str, Any], metrics: TransactionMetrics) -> None:
        super().__init__(config)
        self._metrics = metrics

    def commit_transaction(self, timeout: float = -1) -> None:
        started = time.monotonic()
        super().commit_transaction(timeout)
        self._metrics.transaction_committed(time.monotonic() - started)

    def abort_transaction(self, timeout: float = -1) -> None:
        super().abort_transaction(timeout)
        self._metrics.transaction_aborted(abort_cause(sys.exc_info()[1]))


def abort_cause(handling: BaseException | None) -> str:
    """Why a transaction is aborted, from the error being handled when it is: librdkafka's
    error name (``kafka:_FENCED``...), else the exception's type (``TransientStepError``:
    a step could not decide), else ``no_exception`` (partitions lost in a rebalance).

    Read from the exception in flight rather than passed in, so the loops that abort
    need no change to be counted."""
    if handling is None:
        return NO_EXCEPTION
    if isinstance(handling, KafkaException) and handling.args:
        error = handling.args[0]
        name = getattr(error, "name", None)
        if callable(name):
            return f"kafka:{name()}"
    return type(handling).__name__
