"""The operator UI's server that ``leadflow demo`` leaves running once it ends.

The demo's workers stop with it, but the timelines it printed are worth opening: so it
starts ``leadflow serve`` detached, in its own session, like the stack's services (its pid
and port in ``.stack/ui/``, its log in ``.stack/logs/ui-server.log``), and ``make down``
(``stack/down.sh``) stops it. A second demo finds it running and reuses it; a stale pid
file (a crashed server, a reboot) is cleaned up and a new server started. It listens on
127.0.0.1 only, on 8080 or, when that is taken, on a free port it reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from engine.errors import LeadflowError
from engine.settings import Settings
from engine.ui.auth import ensure_key_file

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
STATE_DIR = Path(".stack")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


class UiServerError(LeadflowError):
    """The background UI server did not come up; the message holds its log's tail."""


@dataclass(frozen=True, slots=True)
class UiServer:
    """A running background server: its process (group leader) and where it listens."""

    pid: int
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True, slots=True)
class UiAnnouncement:
    """What the demo prints: a lead's timeline on the running server, and where the key is."""

    server: UiServer
    lead_url: str
    key_file: Path | None


def _files(state_dir: Path) -> tuple[Path, Path, Path]:
    return state_dir / "ui" / "server.pid", state_dir / "ui" / "server.port", state_dir / "logs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours to signal
    return True


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _spawn_detached(argv: list[str], env: dict[str, str], log_path: Path) -> int:
    """Start ``argv`` in a session of its own, output appended to ``log_path``; its pid.

    posix_spawn rather than Popen: the server is meant to outlive this process, and a Popen
    object dropped while its child runs warns (an error under the test suite's filters).
    """
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,  # outlives the demo and its Ctrl-C; down.sh signals the group
        )
    finally:
        os.close(out)
        os.close(null)


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (and reap it); False for another's process."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _alive(pid)
    return done == pid


def running_ui_server(state_dir: Path = STATE_DIR) -> UiServer | None:
    """The server a previous run left, if its process lives and answers; stale files of one
    that is gone are removed."""
    pid_file, port_file, logs = _files(state_dir)
    try:
        pid, port = int(pid_file.read_text()), int(port_file.read_text())
    except (OSError, ValueError):
        return None
    if _alive(pid) and _answers(port):
        return UiServer(pid, port, logs / "ui-server.log")
    if not _alive(pid):
        pid_file.unlink(missing_ok=True)
        port_file.unlink(missing_ok=True)
    return None


def _server_env(settings: Settings) -> dict[str, str]:
    """The demo's own settings where they decide what the server shows: its schema and its
    UI keys (key files made absolute, so the server's working directory does not matter).
    Keys stay references: no secret is written to the environment here."""
    keys = [
        {
            **k.model_dump(mode="json"),
            **({"key_file": str(k.key_file.resolve())} if k.key_file else {}),
        }
        for k in settings.ui_keys
    ]
    return {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": settings.db_schema,
        "LEADFLOW_UI_KEYS": json.dumps(keys),
    }


def ensure_ui_server(
    settings: Settings, state_dir: Path = STATE_DIR, port: int = DEFAULT_PORT
) -> UiServer:
    """The running background server, or a new one (``leadflow serve``) once it answers."""
    found = running_ui_server(state_dir)
    if found is not None:
        return found
    pid_file, port_file, logs = _files(state_dir)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    chosen = port if _port_free(port) else _any_free_port()
    log_path = logs / "ui-server.log"
    pid = _spawn_detached(
        [sys.executable, "-m", "engine", "serve", "--host", HOST, "--port", str(chosen)],
        _server_env(settings),
        log_path,
    )
    pid_file.write_text(f"{pid}\n")
    port_file.write_text(f"{chosen}\n")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and not _exited(pid):
        if _answers(chosen):
            log.debug("ui_server_started", pid=pid, port=chosen, log=str(log_path))
            return UiServer(pid, chosen, log_path)
        time.sleep(0.2)
    stop_ui_server(state_dir)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise UiServerError(f"leadflow serve did not answer on {HOST}:{chosen}; {log_path}:\n{tail}")


def stop_ui_server(state_dir: Path = STATE_DIR) -> bool:
    """Stop the background server's process group (SIGTERM, then SIGKILL); True if one ran."""
    pid_file, port_file, _ = _files(state_dir)
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    stopped = False
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _exited(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    port_file.unlink(missing_ok=True)
    return stopped


def serve_for_demo(
    settings: Settings, lead_id: str, state_dir: Path = STATE_DIR, port: int = DEFAULT_PORT
) -> UiAnnouncement:
    """The UI server running in the background, the URL of ``lead_id``'s timeline on it, and
    the file holding the key to paste (created if missing)."""
    key_file = ensure_key_file(settings)
    server = ensure_ui_server(settings, state_dir, port)
    return UiAnnouncement(server, f"{server.url}/ui/leads/{lead_id}", key_file)
