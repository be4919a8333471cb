"""One chaos run: services up, flow and workers started, leads submitted while faults are
injected, then the run settles and every invariant is checked over what it left behind."""

from __future__ import annotations

import fcntl
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from confluent_kafka import KafkaError, Message, Producer
from psycopg import sql

from chaos import faults, invariants, observe
from chaos.flow import RECIPIENT_TIMEOUT_MS, SLOW_BUYER_S, chaos_flow
from chaos.services import CHAOS_DIR, RUN_TOPICS_PREFIX, ChaosServices, drop_topics, worker_env
from chaos.soak import Sampler
from chaos.soak import summary as soak_summary
from chaos.workers import WorkerPool, flow_workers
from chaos.workload import Lead, junk_leads, poison_messages, regular_leads
from engine.demo.buyer import BuyerServer
from engine.flows import Flow
from engine.runtime.kafka.clients import new_admin, new_producer
from engine.runtime.kafka.topics import ensure_flow_topics
from engine.settings import Settings
from engine.topics import HANDOFF_HEADER, events_topic, intake_topic
from engine.transport import postgres_tls

log = structlog.get_logger(__name__)

# The inflight_kill fault kills the buyer step once this many calls are at the buyer.
INFLIGHT_KILL_AT = 150


@dataclass(frozen=True)
class RunConfig:
    leads: int = 3000
    rate: float = 50.0  # leads per second, submitted steadily
    seed: int = 7
    faults: tuple[str, ...] = faults.ALL_FAULTS
    kills: int = 15
    store_outage_s: float = 30.0
    broker_down_s: float = 12.0  # a killed broker is fenced after ~9 s: stay down past that
    malformed: int = 80
    oversized: int = 6
    poison: int = 25
    slow: int = 20
    inflight: int = 500  # leads submitted at once for the inflight_kill fault
    # Settling waits for as long as the flow moves, up to this bound, and gives up once
    # nothing has moved for settle_stall_s (see _settle).
    settle_timeout_s: float = 600.0
    settle_stall_s: float = 120.0
    soak_s: float = 0.0
    sample_every_s: float = 10.0
    keep_kafka3: bool = False


@dataclass
class Submitter:
    """Publishes leads to the intake topic keyed by their id; remembers which Kafka refused."""

    settings: Settings
    flow: Flow
    producer: Producer = field(init=False)
    sent: list[Lead] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    poison: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Retried for as long as a broker outage may last: a lead is refused only if
        # the cluster stays unwritable for five minutes.
        self.producer = new_producer(self.settings, **{"message.timeout.ms": 300_000})

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.refused.add((msg.key() or b"").decode())

    def _produce(self, topic: str, value: bytes, key: bytes, headers: list[Any]) -> None:
        while True:
            try:
                with self.lock:
                    self.producer.produce(
                        topic, value, key, headers=headers, on_delivery=self._delivered
                    )
                    self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.1)

    def submit(self, leads: list[Lead]) -> None:
        for lead in leads:
            headers = [("content-type", b"application/json")]
            self._produce(intake_topic(self.flow.id), lead.body, lead.lead_id.encode(), headers)
            self.sent.append(lead)

    def plant_poison(self, values: list[bytes]) -> None:
        """Undecodable hand-offs on the filter step's input: it must dead-letter each once."""
        for value in values:
            topic = events_topic(self.flow.id, "source")
            self._produce(topic, value, b"chaos-poison", [(HANDOFF_HEADER, b"1")])
            self.poison.append(value)

    def flush(self) -> None:
        remaining = self.producer.flush(330)
        if remaining:
            raise RuntimeError(f"{remaining} records never acknowledged")


def _settings(run_id: str, flow: Flow) -> tuple[Settings, dict[str, str]]:
    env = {
        **worker_env(),
        "LEADFLOW_DB_SCHEMA": f"chaos_{run_id}",
        "LEADFLOW_PROJECTOR_PATTERN": rf"^leadflow\.{flow.id}\.events\..+$",
        "LEADFLOW_INSTANCE_ID": f"chaos-{run_id}",
    }
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=env["KAFKA_BOOTSTRAP_SERVERS"],
        DATABASE_URL=env["DATABASE_URL"],
        AWS_ENDPOINT_URL_S3=env["AWS_ENDPOINT_URL_S3"],
        AZURE_STORAGE_CONNECTION_STRING=env["AZURE_STORAGE_CONNECTION_STRING"],
        db_schema=env["LEADFLOW_DB_SCHEMA"],
        projector_pattern=env["LEADFLOW_PROJECTOR_PATTERN"],
    )
    return settings, env


def _completed(settings: Settings, flow: Flow) -> int:
    query = sql.SQL(
        "SELECT count(*) FROM {}.events WHERE flow_id = %s AND type = 'flow.completed'"
    ).format(sql.Identifier(settings.db_schema))
    try:
        with psycopg.connect(
            settings.database_url.get_secret_value(), **postgres_tls(settings), connect_timeout=5
        ) as conn:
            row = conn.execute(query, (flow.id,)).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return -1  # not migrated yet, or Postgres restarting


def _offsets(settings: Settings, flow: Flow) -> dict[str, int] | None:
    """Each group's committed offsets, or None while they cannot be read (a broker away)."""
    try:
        return observe.group_progress(settings, flow)
    except Exception as exc:  # a metadata timeout while a broker returns: ask again
        log.warning("committed offsets not readable yet", error=str(exc))
        return None


def _settle(
    settings: Settings, flow: Flow, leads: int, timeout: float, stall: float
) -> tuple[float, str]:
    """Wait until every lead is completed in Postgres and no group has anything left; how
    long that took and why the wait ended (``drained``, ``stalled``, ``timed out``).

    Not a fixed window: a machine loaded by other jobs gets there later, not never, so
    the wait goes on for as long as anything moves (a lead completed, a group's committed
    offsets), up to ``timeout``. Once nothing has moved for ``stall`` seconds (far
    longer than a transaction timeout, a session timeout or a store's retry backoff),
    the run is stuck and waiting longer would only hide it: the checks report what is
    missing and which group is stuck."""
    began = moved = time.monotonic()
    last_completed, last_offsets = -1, None
    while (now := time.monotonic()) - began < timeout:
        completed, offsets = _completed(settings, flow), _offsets(settings, flow)
        if completed >= leads:
            try:
                if not invariants.stuck_groups(observe.group_lag(settings, flow)):
                    return time.monotonic() - began, "drained"
            except Exception as exc:  # a metadata timeout while a broker returns: ask again
                log.warning("lag not readable yet", error=str(exc))
        if completed != last_completed or (offsets is not None and offsets != last_offsets):
            moved, last_completed = now, completed
            last_offsets = offsets if offsets is not None else last_offsets
        elif now - moved >= stall:
            log.warning("nothing moved, the run is stuck", stalled_s=round(now - moved))
            return time.monotonic() - began, "stalled"
        time.sleep(3)
    return time.monotonic() - began, "timed out"


def run(config: RunConfig) -> dict[str, Any]:
    """One run; runs on this machine take turns (they share the private instances' ports)."""
    CHAOS_DIR.mkdir(parents=True, exist_ok=True)
    with (CHAOS_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run(config)


def _run(config: RunConfig) -> dict[str, Any]:
    rng = random.Random(config.seed)
    run_id = time.strftime("%m%d%H%M%S") + f"{rng.randrange(16**4):04x}"
    workdir = CHAOS_DIR / "runs" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    services = ChaosServices()
    buyer = BuyerServer(port=0, mix=False, slow_seconds=SLOW_BUYER_S)
    buyer.start_in_thread()
    flow_id = f"chaos-{run_id}"
    flow = chaos_flow(flow_id, buyer.url, f"chaos/{run_id}", workdir / "flow.yaml")
    settings, env = _settings(run_id, flow)
    started = time.monotonic()
    pool: WorkerPool | None = None
    try:
        services.up()
        drop_topics(RUN_TOPICS_PREFIX)  # what an earlier run that crashed left behind
        ensure_flow_topics(new_admin(settings), flow)
        steps = [s.id for s in flow.steps]
        pool = WorkerPool(flow_workers(workdir / "flow.yaml", steps, env, workdir / "logs", run_id))
        pool.start()
        return _drive(config, buyer, rng, run_id, flow, settings, services, pool, started)
    finally:
        if pool is not None:
            pool.stop()
        buyer.stop()
        if not config.keep_kafka3:  # kept: its topics stay to be looked at
            try:
                drop_topics(f"leadflow.{flow.id}.")
            except Exception as exc:  # the cluster is gone: nothing left to drop
                log.warning("topics not dropped", error=str(exc))
        services.down(keep_kafka3=config.keep_kafka3)


def _drive(
    config: RunConfig,
    buyer: BuyerServer,
    rng: random.Random,
    run_id: str,
    flow: Flow,
    settings: Settings,
    services: ChaosServices,
    pool: WorkerPool,
    started: float,
) -> dict[str, Any]:
    soak = config.soak_s > 0
    leads = int(config.rate * config.soak_s) if soak else config.leads
    window_s = leads / config.rate
    plan = faults.FaultPlan(
        config.faults, config.kills, config.store_outage_s, config.broker_down_s
    )
    junk = (
        junk_leads(flow, run_id, config.malformed, config.oversized, config.seed, leads)
        if "poison_burst" in config.faults
        else []
    )
    slow = (
        regular_leads(rng, run_id, config.slow, start=leads + len(junk), kind="slow_buyer")
        if "slow_buyer" in config.faults
        else []
    )
    lagging = (
        regular_leads(
            rng, run_id, config.inflight, start=leads + len(junk) + len(slow), kind="inflight"
        )
        if "inflight_kill" in config.faults
        else []
    )
    regular = regular_leads(rng, run_id, max(0, leads - len(junk) - len(slow)))
    poison = poison_messages(rng, config.poison) if "poison_burst" in config.faults else []
    submitter = Submitter(settings, flow)

    def poison_burst() -> str:
        submitter.submit(junk)
        submitter.plant_poison(poison)
        sizes = sum(1 for lead in junk if lead.kind == "oversized")
        return f"{len(junk) - sizes} malformed + {sizes} oversized leads, {len(poison)} poison"

    def slow_buyer() -> str:
        submitter.submit(slow)
        return (
            f"{len(slow)} leads to a buyer answering in {SLOW_BUYER_S}s"
            f" (timeout {RECIPIENT_TIMEOUT_MS} ms)"
        )

    def inflight_kill() -> str:
        """Hundreds of leads to a 300 ms buyer at once; kill -9 the buyer step while they
        are out (the worker keeps them in flight together)."""
        submitter.submit(lagging)
        submitter.flush()
        want = max(1, min(INFLIGHT_KILL_AT, len(lagging) // 3))
        deadline = time.monotonic() + 60
        while buyer.stats.snapshot()["in_flight"] < want and time.monotonic() < deadline:
            time.sleep(0.005)
        out = buyer.stats.snapshot()["in_flight"]
        killed = pool.kill9("premier")
        return (
            f"{len(lagging)} leads to a buyer answering in 300 ms; kill -9 premier with {out}"
            f" calls at the buyer" + ("" if killed else " (was not running)")
        )

    stop = threading.Event()
    injector = faults.Injector(
        services, pool, random.Random(config.seed + 1),
        {"poison_burst": poison_burst, "slow_buyer": slow_buyer, "inflight_kill": inflight_kill},
    )  # fmt: skip
    timeline = faults.schedule(random.Random(config.seed + 2), plan, window_s)
    service_faults = [(at, k) for at, k in timeline if k in faults.SERVICE_FAULTS]
    other_faults = [(at, k) for at, k in timeline if k not in faults.SERVICE_FAULTS]
    threads = [
        threading.Thread(target=injector.run, args=(part, plan, stop), daemon=True)
        for part in (service_faults, other_faults)
    ]
    sampler = Sampler(settings, flow, pool, config.sample_every_s) if soak else None
    if sampler is not None:
        sampler.start()
    for thread in threads:
        thread.start()
    t0 = time.monotonic()
    for n, lead in enumerate(regular):
        # Steady rate: each lead at its own moment, not in bursts per second.
        delay = t0 + n / config.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        submitter.submit([lead])
    for thread in threads:
        thread.join()
    submitter.flush()
    submitted = [lead for lead in submitter.sent if lead.lead_id not in submitter.refused]
    settle_s, settled = _settle(
        settings, flow, len(submitted), config.settle_timeout_s, config.settle_stall_s
    )
    if sampler is not None:
        sampler.stop()
    restarts, exits = pool.restarts(), pool.unexpected_exits()
    pool.stop()  # SIGTERM: what is left is exactly what the run wrote
    result = _check(settings, flow, submitted, submitter.poison)
    result.update(
        run_id=run_id,
        flow_id=flow.id,
        config={k: v for k, v in vars(config).items() if k != "faults"} | {
            "faults": list(config.faults)},
        leads_submitted=len(submitted),
        leads_refused_by_kafka=len(submitter.refused),
        lead_kinds=_kinds(submitted),
        faults=[vars(r) for r in injector.records],
        fault_counts=faults.summary(injector.records),
        fault_errors=injector.errors,
        worker_restarts=restarts,
        # Posts the buyer saw twice under one idempotency key: only calls out at a kill (or
        # answered in a transaction that a kill aborted) are made again.
        buyer=buyer.stats.snapshot(),
        worker_exits=exits,
        submit_s=round(window_s, 1),
        settle_s=round(settle_s, 1),
        settled=settled,
        total_s=round(time.monotonic() - started, 1),
        soak=sampler.samples if sampler is not None else None,
        soak_summary=soak_summary(sampler.samples) if sampler is not None else None,
    )  # fmt: skip
    return result


def _kinds(leads: list[Lead]) -> dict[str, int]:
    out: dict[str, int] = {}
    for lead in leads:
        out[lead.kind] = out.get(lead.kind, 0) + 1
    return out


def _check(
    settings: Settings, flow: Flow, leads: list[Lead], poison: list[bytes]
) -> dict[str, Any]:
    expected = {i: t for lead in leads for i, t in lead.expected()}
    rows = observe.postgres_events(settings, flow)
    sinks = [
        invariants.check_sink("kafka topics", expected, observe.topic_events(settings, flow)),
        invariants.check_sink("postgres", expected, [(i, t) for i, _, t in rows]),
    ]
    dead_objects = {}
    for destination in flow.destinations:
        found, dead_objects[destination.kind] = observe.store_events(settings, destination)
        sinks.append(invariants.check_sink(destination.kind, expected, found))
    by_lead: dict[str, list[str]] = {}
    for event_id, lead_id, _ in rows:
        by_lead.setdefault(lead_id, []).append(event_id)
    wrong_leads = invariants.lead_sequences_ok(
        {lead.lead_id: [i for i, _ in lead.expected()] for lead in leads}, by_lead
    )
    dlq = invariants.check_dead_letters(poison, observe.dead_letters(settings, flow))
    stuck = invariants.stuck_groups(observe.group_lag(settings, flow))
    # The projector reads the poison planted on the source's topic too: it must refuse
    # exactly those records (each once); any other refusal is an event lost from Postgres.
    refused = observe.projector_rejects(settings)
    raws = [r.pop("raw") for r in refused]
    projector_dlq = invariants.check_dead_letters(poison, raws)
    planted = set(poison)
    others = [r for r, raw in zip(refused, raws, strict=True) if raw not in planted]
    ok = (
        all(s.ok for s in sinks)
        and dlq.ok
        and projector_dlq.ok
        and not stuck
        and not wrong_leads
        and all(n == len(poison) for n in dead_objects.values())
    )
    return {
        "ok": ok,
        "events_expected": len(expected),
        "sinks": [vars(s) | {"ok": s.ok} for s in sinks],
        "leads_with_wrong_timeline": wrong_leads,
        "dead_letter_topic": vars(dlq) | {"ok": dlq.ok},
        "dead_letter_objects": dead_objects,
        "stuck_groups": stuck,
        "projector_refusals": vars(projector_dlq) | {"ok": projector_dlq.ok},
        # The refusals other than the planted poison, with why (none on a clean run).
        "projector_rejects": others,
    }
