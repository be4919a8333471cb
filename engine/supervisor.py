"""Run workers: one OS process per role, restarted if one dies.

Two ways to say what runs:

* **a flow file** (``leadflow run -f FLOW``): roles are the flow's step ids
  plus ``projector`` (the timeline), ``analytics``, ``streamer``, ``feedback`` and
  ``relay`` (the system events outbox to Kafka, ``engine.runtime.outbox_relay``),
  ``export-scheduler``;
* **the flow registry** (``leadflow run``): every applied flow's steps
  (``<flow>:<step>``), a ``streamer:<flow>`` per flow, and one ``projector``,
  one ``analytics`` projector and one ``relay`` for all flows. Flows applied later get their
  workers within seconds, and running steps switch to a new version of their
  flow without a restart.

The export scheduler (``projectors.exports.scheduler``) is a role of its own, not a
thread of a projector: a scheduled export spools for minutes, which must not hold back
a projector's commits, and a scheduler that dies is restarted like any role. Several
supervisors may each run one: a scheduled time is run once however many race for it.

One process per role because the GIL makes threads useless for CPU-bound
steps, and because a role that crashes must not take the others down.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog

from engine.flows import Flow, load_flow
from engine.logs import configure_logging
from engine.runtime.alerting.evaluator import run_alerts
from engine.runtime.feedback_worker import run_feedback
from engine.runtime.kafka.metrics import ProcessesMetrics, serve_metrics
from engine.runtime.outbox_relay import OutboxRelay
from engine.runtime.registry import FlowRegistry
from engine.runtime.step_worker import run_step
from engine.runtime.stopping import install_stop_handlers
from engine.settings import Settings, get_settings
from projectors.deliveries import TimelineDeliveries
from projectors.exports.scheduler import ExportScheduler
from projectors.projector import AnalyticsProjector, TimelineProjector
from streamers.service import stream_flow

log = structlog.get_logger(__name__)

SERVICE_ROLES = ("projector", "analytics", "streamer", "feedback", "relay", "export-scheduler")
REGISTRY_POLL_S = 3.0


def streams(flow: Flow) -> bool:
    """Whether the flow has a destination to stream to. A streamer without one returns at
    once, and the supervisor restarted it every few seconds, forever: a flow without
    (enabled) destinations runs no streamer."""
    return any(d.enabled for d in flow.destinations)


def role_names(flow: Flow) -> list[str]:
    return (
        [s.id for s in flow.steps]
        + [r for r in SERVICE_ROLES if r != "streamer" or streams(flow)]
        + (["alerts"] if flow.alerts else [])
    )


def registry_roles(flows: list[Flow]) -> list[str]:
    roles = ["projector", "analytics", "feedback", "relay", "export-scheduler"]
    for flow in flows:
        roles += [f"{flow.id}:{s.id}" for s in flow.steps]
        roles += [f"streamer:{flow.id}"] if streams(flow) else []
        roles += [f"alerts:{flow.id}"] if flow.alerts else []
    return roles


def registry_role_problems(roles: list[str], flows: list[Flow]) -> list[str]:
    """Why each of ``roles`` is no role of the applied ``flows`` (empty: every one is)."""
    known = set(registry_roles(flows))
    by_id = {flow.id: flow for flow in flows}
    problems = []
    for role in roles:
        if role in known:
            continue
        head, colon, tail = role.partition(":")
        flow_id = tail if head in ("streamer", "alerts") else head
        flow = by_id.get(flow_id)
        if not colon:
            problems.append(
                f"{role}: no such role (<flow>:<step>, streamer:<flow>, alerts:<flow>, "
                f"{', '.join(r for r in SERVICE_ROLES if r != 'streamer')})"
            )
        elif flow is None:
            problems.append(f"{role}: no applied flow {flow_id}")
        elif head == "streamer":
            problems.append(f"{role}: flow {flow.id} has no enabled destinations to stream to")
        elif head == "alerts":
            problems.append(f"{role}: flow {flow.id} has no alert rules")
        else:
            steps = ", ".join(s.id for s in flow.steps)
            problems.append(f"{role}: flow {flow.id} has no step {tail} (its steps: {steps})")
    return problems


def run_role(role: str, settings: Settings, flow: Flow, stop: threading.Event) -> None:
    """Run one role of a flow-file deployment in this process until ``stop`` is set."""
    structlog.contextvars.bind_contextvars(role=role, flow=flow.id)
    if role in ("projector", "analytics"):
        _run_projector(settings, role, stop)
    elif role == "feedback":
        run_feedback(settings, stop, TimelineDeliveries(settings))
    elif role == "relay":
        OutboxRelay(settings).run(stop)
    elif role == "export-scheduler":
        ExportScheduler(settings, flows=lambda: [flow]).run(stop)
    elif role == "streamer":
        stream_flow(settings, flow, stop, metrics_port=settings.streamer_metrics_port or None)
    elif role == "alerts":
        run_alerts(settings, flow, stop)
    else:
        flow.step(role)  # KeyError for an unknown role, before anything connects
        run_step(settings, flow, role, stop)


def _run_projector(settings: Settings, role: str, stop: threading.Event) -> None:
    if role == "analytics":
        AnalyticsProjector(settings, settings.projector_pattern).run(stop)
        return

    TimelineProjector(settings, settings.projector_pattern, settings.projector_name).run(stop)


def run_registry_role(role: str, settings: Settings, stop: threading.Event) -> None:
    """Run one role of a registry deployment: its flow comes from ``leadflow.flows``."""

    structlog.contextvars.bind_contextvars(role=role)
    if role in ("projector", "analytics"):
        _run_projector(settings, role, stop)
        return
    if role == "feedback":
        run_feedback(settings, stop, TimelineDeliveries(settings))
        return
    if role == "relay":
        # A role of its own, not a thread of the streamer or the supervisor: the outbox is
        # written by commands, streamers and export runs of every flow (a flow without
        # destinations has no streamer), and a relay that dies is restarted alone.
        OutboxRelay(settings).run(stop)
        return
    if role == "export-scheduler":
        _run_registry_scheduler(settings, stop)
        return
    registry = FlowRegistry(settings)
    registry.refresh()
    head, _, tail = role.partition(":")
    flow_id = tail if head in ("streamer", "alerts") else head
    flow = registry.get(flow_id)
    if flow is None:
        raise KeyError(f"flow {flow_id} is not in the registry")
    if head == "streamer":
        registry.close()
        stream_flow(settings, flow, stop, metrics_port=settings.streamer_metrics_port or None)
    elif head == "alerts":
        try:
            run_alerts(settings, flow, stop, registry=registry)
        finally:
            registry.close()
    else:
        run_step(settings, flow, tail, stop, registry=registry)


def _run_registry_scheduler(settings: Settings, stop: threading.Event) -> None:
    """The scheduler, keeping every applied flow's ``exports:`` in step (a flow deleted
    from the registry stops its schedules)."""
    registry = FlowRegistry(settings)

    def flows() -> list[Flow]:
        registry.refresh(timeout=2.0)
        return registry.flows()

    try:
        ExportScheduler(settings, flows=flows, every_flow=True).run(stop)
    finally:
        registry.close()


def _child(role: str, flow_file: str | None) -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop)
    if flow_file is None:
        run_registry_role(role, settings, stop)
    else:
        run_role(role, settings, load_flow(Path(flow_file)), stop)


class _Processes:
    def __init__(self, flow_file: Path | None, metrics: ProcessesMetrics | None = None) -> None:
        self.ctx = mp.get_context("spawn")
        self.flow_file = str(flow_file) if flow_file else None
        self.procs: dict[str, BaseProcess] = {}
        self.metrics = metrics

    def start(self, role: str) -> None:
        proc = self.ctx.Process(target=_child, args=(role, self.flow_file), name=f"leadflow-{role}")
        proc.start()
        self.procs[role] = proc
        log.info("role started", role=role, pid=proc.pid)

    def stop(self, roles: list[str], timeout: float = 30.0) -> None:
        for role in roles:
            proc = self.procs[role]
            if proc.is_alive():
                proc.terminate()  # SIGTERM: finish the batch, commit, close
        deadline = time.monotonic() + timeout
        for role in roles:
            proc = self.procs.pop(role)
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("role did not stop in time, killing", role=role)
                proc.kill()
                proc.join(5)
            self._exited(proc)

    def restart_dead(self) -> None:
        for role, proc in list(self.procs.items()):
            if not proc.is_alive():
                log.warning("role exited, restarting", role=role, exitcode=proc.exitcode)
                self._exited(proc)
                time.sleep(1.0)
                self.start(role)

    def _exited(self, proc: BaseProcess) -> None:
        if self.metrics is not None and proc.pid is not None:
            self.metrics.process_exited(proc.pid)


def supervise(roles: list[str], flow_file: Path | None, stop: threading.Event) -> None:
    """Start each role in its own process; restart one that exits unexpectedly.

    Without a flow file, the roles follow the flow registry (``roles`` then
    only narrows them: an empty list means every role)."""
    settings = get_settings()
    with _metrics(settings.metrics_port) as metrics:
        _supervise(roles, flow_file, stop, settings, metrics)


@contextlib.contextmanager
def _metrics(port: int) -> Iterator[ProcessesMetrics | None]:
    """With a port, the roles' metrics in multiprocess mode, served at it until the end.
    Set up before the first child starts: they write where the supervisor reads."""
    if not port:
        yield None
        return
    metrics = ProcessesMetrics()
    try:
        server, _ = serve_metrics(port)
        try:
            yield metrics
        finally:
            server.shutdown()
            server.server_close()
    finally:
        metrics.close()


def _supervise(
    roles: list[str],
    flow_file: Path | None,
    stop: threading.Event,
    settings: Settings,
    metrics: ProcessesMetrics | None,
) -> None:
    procs = _Processes(flow_file, metrics)
    registry = None
    if flow_file is None:
        registry = FlowRegistry(settings)
    try:
        next_poll = 0.0
        while True:
            if registry is not None and time.monotonic() >= next_poll:
                registry.refresh(timeout=2.0)
                wanted = [r for r in registry_roles(registry.flows()) if not roles or r in roles]
                gone = [r for r in procs.procs if r not in wanted]
                if gone:
                    procs.stop(gone)
                for role in wanted:
                    if role not in procs.procs:
                        procs.start(role)
                next_poll = time.monotonic() + REGISTRY_POLL_S
            elif registry is None and not procs.procs:
                for role in roles:
                    procs.start(role)
            if stop.wait(0.5):
                break
            procs.restart_dead()
    finally:
        procs.stop(list(procs.procs))
        if registry is not None:
            registry.close()
