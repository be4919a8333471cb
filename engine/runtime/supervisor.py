"""Run a flow's workers: one OS process per role, restarted if one dies.

Roles are the flow's step ids plus ``projector`` and ``streamer``. One process
per role because the GIL makes threads useless for CPU-bound steps, and
because a role that crashes must not take the others down.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import structlog

from engine.flows import Flow, load_flow
from engine.logs import configure_logging
from engine.settings import Settings, get_settings

log = structlog.get_logger(__name__)

SERVICE_ROLES = ("projector", "streamer")


def role_names(flow: Flow) -> list[str]:
    return [s.id for s in flow.steps] + list(SERVICE_ROLES)


def install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_role(role: str, settings: Settings, flow: Flow, stop: threading.Event) -> None:
    """Run one role in this process until ``stop`` is set."""
    structlog.contextvars.bind_contextvars(role=role, flow=flow.id)
    if role == "projector":
        from projectors.timeline import TimelineProjector

        TimelineProjector(settings, settings.projector_pattern, settings.projector_name).run(stop)
    elif role == "streamer":
        from streamers.worker import run_streamers

        run_streamers(settings, flow, stop)
    else:
        from engine.runtime.step_worker import run_step

        flow.step(role)  # KeyError for an unknown role, before anything connects
        run_step(settings, flow, role, stop)


def _child(role: str, flow_file: str) -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop)
    run_role(role, settings, load_flow(Path(flow_file)), stop)


def supervise(roles: list[str], flow_file: Path, stop: threading.Event) -> None:
    """Start each role in its own process; restart one that exits unexpectedly."""
    ctx = mp.get_context("spawn")
    procs: dict[str, BaseProcess] = {}

    def start(role: str) -> None:
        proc = ctx.Process(target=_child, args=(role, str(flow_file)), name=f"leadflow-{role}")
        proc.start()
        procs[role] = proc
        log.info("role started", role=role, pid=proc.pid)

    for role in roles:
        start(role)
    try:
        while not stop.wait(0.5):
            for role, proc in list(procs.items()):
                if not proc.is_alive():
                    log.error("role exited, restarting", role=role, exitcode=proc.exitcode)
                    time.sleep(1.0)
                    start(role)
    finally:
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: finish the batch, commit, close
        deadline = time.monotonic() + 30
        for role, proc in procs.items():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("role did not stop in time, killing", role=role)
                proc.kill()
