"""The alert evaluator of one flow: its event topics in, decisions committed with offsets.

Continuous, not a query on a timer: the evaluator reads every partition of the flow's
event topics (assigned, not subscribed: one evaluator judges all of a flow's leads, the
flow's lock in Postgres makes sure of it) and feeds each event to ``engine.alerts``. After
each batch, and at least every ``tick_s`` when the topics are quiet (windows slide and
minimum durations pass without events), it judges every rule and commits, in one Postgres
transaction, the offsets it read to, the windows that changed, the system events and the
actions (``engine.state.alerts``).

Why Postgres rather than rebuilding the windows from the topic at start: the alert's own
state (firing since when, which episode) must survive a restart with the windows, or a
restarted evaluator would fire again what it fired before the kill; a commit that holds
offsets, windows, alert state and the outbox row together has no moment where one is
saved and the other not. Rebuilding would also tie restarts to the topics' retention
and read a whole window's events each time. On any state failure the evaluator drops
what it holds and starts again from the last commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from engine.alerts.actions import actions_for
from engine.alerts.evaluation import FlowAlerts
from engine.errors import LeadflowError
from engine.flows import Flow, SourceStep
from engine.runtime.alerting.actions import ActionRunner
from engine.runtime.backoff import backoff_delay
from engine.runtime.kafka.clients import new_admin, new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.runtime.kafka.offsets import offsets_at
from engine.runtime.registry import FlowRegistry
from engine.runtime.schema_registry import reading_codec
from engine.settings import Settings
from engine.state.alerts import AlertStateStore, Position
from engine.topics import flow_event_topics
from schemas.codec import SchemaMismatchError

log = structlog.get_logger(__name__)

BATCH = 1000
FETCH_WAIT_S = 0.2
# How often a registry-run evaluator looks for a new version of its flow.
FOLLOW_S = 3.0

Clock = Callable[[], float]  # seconds since the epoch


def consumer_group(flow_id: str, schema: str) -> str:
    """Only names the consumer: the evaluator assigns partitions and keeps its offsets in
    Postgres, so the group never joins nor commits."""
    return f"leadflow.alerts.{schema}.{flow_id}"


def _partitions(consumer: Consumer, topics: list[str]) -> list[Position]:
    meta = consumer.list_topics(timeout=10).topics
    return sorted((t, p) for t in topics if t in meta for p in meta[t].partitions)


class AlertEvaluator:
    """One run of the evaluator, from the last commit until ``stop`` or a state failure."""

    def __init__(
        self,
        settings: Settings,
        flow: Flow,
        clock: Clock = time.time,
        tick_s: float = 1.0,
        registry: FlowRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.flow = flow
        self.registry = registry
        self.clock = clock
        self.tick_s = tick_s
        self._log = log.bind(flow_id=flow.id)
        source = flow.steps[0]
        self._source_caps = list(source.settings.caps) if isinstance(source, SourceStep) else []

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def run(self, stop: threading.Event) -> None:
        store = AlertStateStore(self.settings, self.flow.id)
        consumer: Consumer | None = None
        try:
            if not store.acquire(stop):
                return
            alerts = FlowAlerts(self.flow.id, self.flow.alerts)
            for stored in store.instances():
                alerts.load(stored.key, stored.window, stored.alert)
            consumer = new_consumer(
                self.settings, consumer_group(self.flow.id, self.settings.db_schema)
            )
            positions = self._assign(consumer, store.positions())
            self._log.info(
                "alert evaluator started",
                rules=[r.id for r in self.flow.alerts],
                partitions=len(positions),
            )
            self._loop(stop, consumer, store, alerts, positions)
        finally:
            if consumer is not None:
                consumer.close()
            store.close()

    def _assign(self, consumer: Consumer, stored: dict[Position, int]) -> dict[Position, int]:
        """Every partition of the flow's event topics, from its stored position; one never
        read starts at the oldest record a window could still hold (older ones would be
        dropped as late anyway)."""
        parts = _partitions(consumer, flow_event_topics(self.flow))
        fresh = [tp for tp in parts if tp not in stored]
        widest = max(r.window_ms for r in self.flow.alerts)
        starts = dict(stored)
        if fresh:
            starts.update(offsets_at(new_admin(self.settings), fresh, self._now_ms() - widest))
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in parts])
        return {tp: starts[tp] for tp in parts}

    def _loop(
        self,
        stop: threading.Event,
        consumer: Consumer,
        store: AlertStateStore,
        alerts: FlowAlerts,
        positions: dict[Position, int],
    ) -> None:
        codec = reading_codec(self.settings)
        errors = ConsumeErrors(consumer_group(self.flow.id, self.settings.db_schema))
        judged_at = 0.0
        followed = time.monotonic()
        while not stop.is_set():
            if self.registry is not None and time.monotonic() - followed >= FOLLOW_S:
                followed = time.monotonic()
                self.registry.refresh(timeout=2.0)
                if self.registry.get(self.flow.id) != self.flow:
                    # A new version (new rules, or a cap an alert lowered) or none: this run
                    # ends at its last commit and the next one starts from there.
                    return
            records = fetch(consumer, BATCH, FETCH_WAIT_S, errors)
            now_ms = self._now_ms()
            moved: dict[Position, int] = {}
            for msg in records:
                self._observe(alerts, codec.decode, msg, now_ms)
                moved[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            if not records and time.monotonic() - judged_at < self.tick_s:
                continue
            judged_at = time.monotonic()
            changes = alerts.evaluate(now_ms)
            owed = [(c, actions_for(c, self._source_caps)) for c in changes]
            store.commit(moved, alerts.take_dirty(), owed)
            positions.update(moved)
            for change, drafts in owed:
                self._log.warning(
                    f"alert {change.transition}",
                    alert_id=change.alert_id,
                    rule=change.rule.id,
                    subject=change.subject,
                    summary=change.payload["summary"],
                    actions=[d.kind for d in drafts],
                )

    def _observe(
        self,
        alerts: FlowAlerts,
        decode: Callable[[bytes], dict[str, object]],
        msg: Message,
        now_ms: int,
    ) -> None:
        try:
            event = decode(msg.value() or b"")
        except SchemaMismatchError as exc:
            # Not a lead event this evaluator can read: it counts in no rule, and the
            # stream goes on (the projectors keep such records for inspection).
            self._log.warning(
                "undecodable event skipped",
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                error=str(exc),
            )
            return
        alerts.observe(event, now_ms)


def run_alerts(
    settings: Settings,
    flow: Flow,
    stop: threading.Event,
    *,
    clock: Clock = time.time,
    tick_s: float = 1.0,
    registry: FlowRegistry | None = None,
) -> None:
    """Evaluate ``flow``'s alert rules and carry out their actions until ``stop``.

    With ``registry``, follow the flow's versions there (until it has no rules or is gone).
    """
    if not flow.alerts:
        log.info("flow has no alert rules", flow_id=flow.id)
        return
    runner = ActionRunner(settings, flow.id)
    halt = threading.Event()  # the runner's stop: ``stop``, or the evaluator leaving
    actions = threading.Thread(target=runner.run, args=(halt,), name=f"alert-actions-{flow.id}")
    actions.start()
    failures = 0
    try:
        while not stop.is_set():
            try:
                AlertEvaluator(settings, flow, clock, tick_s, registry).run(stop)
                failures = 0
                if registry is not None:
                    latest = registry.get(flow.id)
                    if latest is None or not latest.alerts:
                        log.info("alert rules gone from the flow", flow_id=flow.id)
                        return
                    flow = latest
            except LeadflowError as exc:
                # Postgres or the schema registry away (``StateUnavailableError`` and the
                # like): whatever was decided since the last commit
                # is dropped, and the next run starts from that commit.
                failures += 1
                log.warning("alert evaluator restarts", flow_id=flow.id, error=str(exc))
                stop.wait(backoff_delay(failures))
    finally:
        halt.set()
        actions.join()
