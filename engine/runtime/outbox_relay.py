"""The outbox relay: pending system events from Postgres to Kafka, then stamped published.

Delivery is **at least once, with the event id as the dedupe key**. One pass, under a
Postgres advisory lock (one relay publishes at a time, so events go out in one order):

1. lock the oldest pending rows (``FOR UPDATE``) in a Postgres transaction;
2. produce them in one Kafka transaction (idempotent, transactional producer) and commit it;
3. stamp them published and commit the Postgres transaction.

A failure before (2) commits leaves the rows pending and nothing visible to
read_committed readers (the Kafka transaction is aborted); the next pass publishes them.
A crash or a lost Postgres connection between (2) and (3) publishes those rows again on
the next pass, under the same ids: consumers of the topics keep the first record of an
id. Postgres holds every event once (the id is its primary key), so ``GET /system-events``
never shows a duplicate.

What one event becomes, in the same Kafka transaction (so all or none):

* ``leadflow.system-events`` (one partition, uncompacted, kept forever): every event, as
  ``SystemEvent.as_json``, keyed by its subject - the catalogue's ``object.action`` stream
  and the full history of every object, flows included;
* ``flow.*`` also: the flow registry's record on the compacted ``leadflow.flows`` (its
  definition, or a tombstone for ``flow.deleted``), so the registry and the history cannot
  disagree;
* ``event_destination.*`` also: the record ``leadflow.destinations`` always carried
  (``id, type, flow_id, destination, reason, at``, now with ``data``), for its readers.

Writers call :meth:`OutboxRelay.publish_pending` right after their commit (the fast path:
the event is out before the command returns); the ``relay`` role runs :meth:`run`, which
publishes what the fast path could not (Kafka away) and what writers without one insert.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from engine.errors import LeadflowError
from engine.flows import Flow
from engine.runtime.kafka.clients import new_admin, new_transactional_producer
from engine.runtime.kafka.offsets import TopicPart, list_offsets
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.outbox import SystemEvent, claim_pending, mark_published
from engine.state.postgres import connect, migrate_state

log = structlog.get_logger(__name__)

SYSTEM_EVENTS_TOPIC = "leadflow.system-events"
FLOWS_TOPIC = "leadflow.flows"
DESTINATIONS_TOPIC = "leadflow.destinations"
# One relay publishes at a time (per schema): the key of its transaction-scoped lock.
_LOCK = "leadflow.system_event_outbox.relay"

Record = tuple[str, bytes | None, bytes]  # topic, value (None: a tombstone), key


class OutboxUnpublishedError(LeadflowError):
    """Pending events could not be published now; they stay pending for the next pass."""


def flow_checksum(definition: dict[str, Any]) -> str:
    """Identity of a flow definition's content (JSON, as ``Flow.model_dump``), its version
    aside: what ``flow apply`` compares to tell an update from a re-apply."""
    body = {k: v for k, v in definition.items() if k != "version"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def flows_topic_spec(replication: int = 1) -> TopicSpec:
    """The registry: one partition (one total order of configuration changes), compacted."""
    return TopicSpec(
        FLOWS_TOPIC, 1, replication, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    )


def ensure_system_topics(admin: AdminClient, replication: int, timeout: float) -> None:
    """The topics the relay writes: the system events and destinations trails (one partition
    each: one order; kept forever: a few records per object per day) and the registry."""
    forever = {"retention.ms": "-1"}
    specs = [
        TopicSpec(SYSTEM_EVENTS_TOPIC, 1, replication, forever),
        TopicSpec(DESTINATIONS_TOPIC, 1, replication, forever),
        flows_topic_spec(replication),
    ]
    ensure_topics(admin, specs, timeout=timeout)


def records_of(event: SystemEvent) -> Iterator[Record]:
    """What one event is written as, on every topic that carries it."""
    body = event.as_json()
    yield SYSTEM_EVENTS_TOPIC, orjson.dumps(body), event.subject.encode()
    data = event.data
    if event.type in ("flow.created", "flow.updated"):
        if not _is_definition(data):
            # Not written by `flow apply`: the registry is not changed by what it cannot run
            # (the event still goes out; a row that stopped the relay would hold back all).
            log.error("flow event without a valid definition: registry not changed",
                      event_id=event.id, type=event.type)  # fmt: skip
            return
        record = {
            "type": event.type,
            "flow_id": event.flow_id,
            "version": data["version"],
            "checksum": flow_checksum(data),
            "timestamp": int(event.occurred_at.timestamp() * 1000),
            "definition": data,
            "event_id": event.id,
        }
        if event.reason is not None:  # not an operator's apply: an alert's automated response
            record["reason"] = event.reason
        yield FLOWS_TOPIC, orjson.dumps(record), str(event.flow_id).encode()
    elif event.type == "flow.deleted":
        yield FLOWS_TOPIC, None, str(event.flow_id).encode()
    elif event.type.startswith("event_destination."):
        # The subject ends with the key too: a row with less data still goes out.
        key = str(data.get("key") or event.subject.rsplit("/", 1)[-1])
        legacy = {
            "id": event.id,
            "type": event.type,
            "flow_id": event.flow_id,
            "destination": key,
            "reason": event.reason,
            "at": body["occurred_at"],
            "data": data,
        }
        yield DESTINATIONS_TOPIC, orjson.dumps(legacy), f"{event.flow_id}/{key}".encode()


def _is_definition(data: dict[str, Any]) -> bool:
    try:
        Flow.model_validate(data)
    except ValidationError:
        return False
    return True


class OutboxRelay:
    """Publishes the outbox's pending events; one per process, used from one thread at a time
    (calls are serialised by a lock, so a process's threads may share it).

    ``timeout`` bounds each Kafka wait (topics, ``init_transactions``, the commit) and the
    wait for another relay's lock: a broker that does not answer costs that, then the rows
    wait for the next pass."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0, batch: int = 500) -> None:
        self.settings = settings
        self.timeout = timeout
        self.batch = batch
        self._producer: Producer | None = None
        self._migrated = False
        self._serial = threading.Lock()

    def publish_pending(self) -> int:
        """Publish every pending event; returns how many. Queues behind a relay that is
        publishing (up to ``timeout``), then takes what it left: a writer's event is out
        when this returns. ``OutboxUnpublishedError`` if Kafka failed (the rows stay
        pending), ``StateUnavailableError`` if Postgres did (or the wait was too long)."""
        total = 0
        with self._serial:
            while True:
                done = self._publish_batch()
                total += done
                if done < self.batch:
                    return total

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """The ``relay`` role: publish, then again every ``poll_s`` until ``stop``."""
        log.info("outbox relay started", topic=SYSTEM_EVENTS_TOPIC)
        try:
            while not stop.is_set():
                try:
                    self.publish_pending()
                except (OutboxUnpublishedError, StateUnavailableError) as exc:
                    log.warning("system events not published yet, retrying", error=str(exc))
                stop.wait(poll_s)
        finally:
            self.close()

    def close(self) -> None:
        self._producer = None  # nothing is left in flight: every pass ends its transaction

    def _publish_batch(self) -> int:
        if not self._migrated:
            migrate_state(self.settings)
            self._migrated = True
        try:
            with connect(self.settings, statement_timeout_ms=30_000) as conn, conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {int(self.timeout * 1000)}")
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{_LOCK}.{self.settings.db_schema}",),  # locks are the database's
                )
                events = claim_pending(conn, self.batch)
                if not events:
                    return 0
                self._produce(events)
                # The Kafka transaction is committed: from here a failure means "again".
                mark_published(conn, [e.id for e in events])
        except psycopg.Error as exc:
            raise StateUnavailableError(f"outbox unavailable: {exc}") from exc
        log.info("system events published", count=len(events), last=events[-1].id)
        return len(events)

    def _produce(self, events: list[SystemEvent]) -> None:
        # The last offset written per partition, from the delivery reports.
        written: dict[TopicPart, int] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                part = (msg.topic() or "", msg.partition() or 0)
                written[part] = max(written.get(part, -1), msg.offset() or 0)

        try:
            producer = self._open()
            producer.begin_transaction()
            try:
                for event in events:
                    for topic, value, key in records_of(event):
                        producer.produce(topic, value, key, on_delivery=delivered)
                producer.commit_transaction(self.timeout)
                producer.poll(0)  # the delivery reports the commit's flush left queued
            except KafkaException:
                self._abort(producer)
                raise
        except KafkaException as exc:
            # A fresh producer next pass: after a timeout or a fencing, this one's
            # transactional state is not worth untangling for a few records.
            self._producer = None
            raise OutboxUnpublishedError(
                f"{len(events)} system event(s) recorded but not published yet (the relay"
                f" role publishes them once Kafka answers): {exc.args[0]}"
            ) from exc
        self._await_readable(written)

    def _await_readable(self, written: dict[TopicPart, int]) -> None:
        """Return once ``read_committed`` readers can see ``written`` (partition -> last
        offset): the commit returns when the transaction coordinator has logged it, and
        it writes the partitions' commit markers after that, so for a moment the records
        are committed but not yet readable. A command that applied a flow and then reads
        the registry (the intake's catalogue, a test, an operator's next command) must find
        the change. Bounded by ``timeout``; past it, a warning: the events are published,
        and readers see them once the markers land."""
        if not written:
            return
        admin = new_admin(self.settings)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                ends = list_offsets(admin, written, "latest", timeout=self.timeout)
            except KafkaException as exc:
                log.warning("published system events not confirmed readable",
                            error=str(exc.args[0]))  # fmt: skip
                return
            if all(ends.get(part, -1) > last for part, last in written.items()):
                return
            if time.monotonic() >= deadline:
                log.warning("published system events not readable yet",
                            partitions=len(written), waited_s=self.timeout)  # fmt: skip
                return
            time.sleep(0.005)

    def _open(self) -> Producer:
        if self._producer is None:
            ensure_system_topics(new_admin(self.settings), self.settings.topic_replication,
                                 self.timeout)  # fmt: skip
            # Unique per instance: inline publishers (CLI, streamers) and the relay role
            # never fence one another; the advisory lock is what keeps them from racing.
            producer = new_transactional_producer(
                self.settings, f"leadflow.outbox-relay.{uuid.uuid4().hex}"
            )
            producer.init_transactions(self.timeout)
            self._producer = producer
        return self._producer

    def _abort(self, producer: Producer) -> None:
        try:
            producer.abort_transaction(self.timeout)
        except KafkaException as exc:  # the transaction then times out on the broker
            log.warning("system events transaction not aborted", error=str(exc.args[0]))
