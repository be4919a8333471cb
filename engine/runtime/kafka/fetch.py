"""Fetching a batch of records, and the triage of what a consumer hands back instead of one.

Two things every consumer loop has to get right, written once:

* ``consume(n, timeout)`` blocks until ``n`` records are there or the timeout passes,
  which puts the whole timeout on every record of a quiet topic. :func:`fetch` takes
  what librdkafka has already fetched and, only when that is nothing, waits for the
  *first* record and takes whatever came with it (loops that write batches and that
  nobody waits on ask it to ``fill`` a batch instead).
* librdkafka reports errors as messages in the batch. Fatal ones must end the
  process so that its supervisor starts another: that includes a static member fenced
  by its own ``group.instance.id`` (``_FATAL`` with ``fatal()`` False, see
  ``config.is_fatal``), which a loop that only logged kept alive consuming nothing.
  Partition EOF is not an error but the partition's end offset (past any transaction
  marker), which some readers need. Everything else librdkafka retries on its own: it
  is logged once per kind, not once per message (a broker outage reports one per
  partition per poll), and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from engine.runtime.kafka.config import is_fatal

log = structlog.get_logger(__name__)

# A transient error of a kind already logged is logged again (with how many came
# meanwhile) at most this often: an outage stays visible without flooding the log.
REPEAT_LOG_S = 60.0

# Told of a partition's end: (topic, partition, end offset). Only consumers created
# with ``enable.partition.eof`` report ends. Ends are reported while the batch is
# triaged, before its caller sees the records: a record of the same partition in the
# batch at or past that offset came after the end, which is then no longer the end.
EofHook = Callable[[str, int, int], None]


class Fetching(Protocol):
    """The part of a librdkafka ``Consumer`` that :func:`fetch` uses."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...

    def poll(self, timeout: float = -1) -> Message | None: ...


class ConsumeErrors:
    """The triage of one consumer's error messages, remembering which kinds it has logged.

    ``counted`` is told each transient error's name (the worker's metrics count them).
    """

    def __init__(
        self,
        name: str = "",
        counted: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._counted = counted
        self._clock = clock
        # Per error code: when it was last logged, and how many came since.
        self._logged: dict[int, float] = {}
        self._since: dict[int, int] = {}

    def triage(self, messages: list[Message], on_eof: EofHook | None = None) -> list[Message]:
        """The records of ``messages``, in order; raises ``KafkaException`` on a fatal error,
        reports partition ends to ``on_eof``, logs and counts the rest."""
        for msg in messages:
            if msg.error() is not None:
                break
        else:
            return messages  # the usual case: no copy, nothing more per record
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif is_fatal(err):
                raise KafkaException(err)  # fenced or dead: the supervisor restarts us
            elif err.code() == KafkaError._PARTITION_EOF:
                if on_eof is not None:
                    on_eof(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            else:
                self.transient(err)
        return records

    def transient(self, err: KafkaError) -> None:
        """A retriable error: counted always, logged the first time and then at most every
        ``REPEAT_LOG_S`` per kind."""
        code = err.code()
        if self._counted is not None:
            self._counted(err.name())
        now = self._clock()
        last = self._logged.get(code)
        if last is not None and now - last < REPEAT_LOG_S:
            self._since[code] = self._since.get(code, 0) + 1
            return
        self._logged[code] = now
        log.warning(
            "consume error, retried",
            consumer=self.name,
            error=str(err),
            code=err.name(),
            since_last_logged=self._since.pop(code, 0),
        )


def fetch(
    consumer: Fetching,
    max_records: int,
    wait: float,
    errors: ConsumeErrors,
    on_eof: EofHook | None = None,
    *,
    fill: bool = False,
) -> list[Message]:
    """Up to ``max_records`` records: what is already fetched; when that is nothing, wait (at
    most ``wait`` seconds) for the first record and take whatever came with it.

    ``fill``: wait up to ``wait`` for a *full* batch instead, for loops that write what
    they read in batches, where a bigger batch is worth the wait (a streamer's round of
    objects, a rebuild's Postgres batch) and nobody waits on each record.

    Error messages are triaged (:meth:`ConsumeErrors.triage`), so the result holds records
    only and may be shorter than what librdkafka handed over, or empty.
    """
    if fill:
        return errors.triage(consumer.consume(max_records, timeout=wait), on_eof)
    messages = consumer.consume(max_records, timeout=0)
    if not messages:
        first = consumer.poll(wait)
        if first is None:
            return []
        messages = [first]
        if max_records > 1:
            messages += consumer.consume(max_records - 1, timeout=0)
    return errors.triage(messages, on_eof)
