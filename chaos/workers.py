"""The flow's workers as OS processes this harness owns: start, kill -9, restart, measure RSS.

The harness is the supervisor (not ``leadflow run``'s), so it knows which pid is which role
and can kill one at a random moment; a worker that dies for any reason (killed, or failing
at start while Postgres restarts) is started again, as a real supervisor would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from chaos.services import REPO

log = structlog.get_logger(__name__)

RESTART_DELAY_S = 0.5


@dataclass
class Worker:
    role: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)
    exits_seen: int = 0  # starts whose exit code is in ``exits`` (a failed restart adds none)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> bool:
        if not self.alive():
            return False
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1
        return True

    def rss_mb(self) -> float | None:
        """Resident memory from /proc (no psutil in the dev venv); None if not running."""
        if not self.alive():
            return None
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def terminate(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def flow_workers(
    flow_file: Path, steps: list[str], env: dict[str, str], logs: Path, run_id: str
) -> list[Worker]:
    """One process per step, the timeline projector and the streamer (both destinations)."""
    logs.mkdir(parents=True, exist_ok=True)
    leadflow = [sys.executable, "-m", "engine", "run", "-f", str(flow_file)]
    roles = {step: [*leadflow, step] for step in steps}
    roles["projector"] = [*leadflow, "projector"]
    # Static membership: a restarted streamer takes its predecessor's partitions at once.
    roles["streamer"] = [
        sys.executable, "-m", "streamers", "--flow-file", str(flow_file),
        "-X", f"group.instance.id=chaos-{run_id}-streamer",
    ]  # fmt: skip
    full_env = {**os.environ, **env, "LEADFLOW_LOG_FORMAT": "json"}
    return [Worker(r, argv, logs / f"{r}.log", full_env) for r, argv in roles.items()]


class WorkerPool:
    """Keeps every worker running until stopped; a dead one is restarted after a short delay."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = {w.role: w for w in workers}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._thread.start()

    def kill9(self, role: str) -> bool:
        with self.lock:
            return self.workers[role].kill9()

    def _watch(self) -> None:
        while not self._stop.wait(RESTART_DELAY_S):
            with self.lock:
                for worker in self.workers.values():
                    self._restart_if_dead(worker)

    def _restart_if_dead(self, worker: Worker) -> None:
        """Start a dead worker again. A start that fails (fork refused on a loaded machine,
        its log not writable) is tried again at the next round: an exception here would
        end the supervisor thread, and every worker that died after it would stay dead,
        which the run could only report as events missing."""
        if worker.alive():
            return
        assert worker.proc is not None
        if worker.exits_seen < worker.starts:
            worker.exits.append(worker.proc.returncode)
            worker.exits_seen = worker.starts
        try:
            worker.start()
        except Exception as exc:
            log.error("worker could not be started, retrying", role=worker.role, error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for worker in self.workers.values():
            if worker.proc is not None and worker.alive():
                worker.proc.terminate()
        for worker in self.workers.values():
            worker.terminate()

    def restarts(self) -> dict[str, int]:
        return {role: w.starts - 1 for role, w in self.workers.items()}

    def unexpected_exits(self) -> dict[str, list[int]]:
        """Exit codes of the workers that ended on their own (-9: killed by the harness)."""
        return {role: [c for c in w.exits if c != -9] for role, w in self.workers.items()}
