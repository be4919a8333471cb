"""What ``leadflow demo`` leaves behind: the UI server running detached, the URL it printed
opening a real lead's timeline with the key from the file it named, reused by the next
demo, and stopped by ``make down`` (``stack/down.sh``)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.demo.ui_server import running_ui_server, serve_for_demo, stop_ui_server
from engine.settings import Settings, UiKey
from tests.engine.ui.conftest import UiStack, free_port

pytestmark = pytest.mark.stack

DOWN_SH = Path(__file__).parents[3] / "stack" / "down.sh"


@pytest.fixture
def demo_settings(ui_stack: UiStack, tmp_path: Path) -> Settings:
    """The session's projection, read with a key kept in a file as the demo keeps it."""
    key = UiKey(name="local", key_file=tmp_path / "ui.key", scopes=("read", "pii"))
    return ui_stack.settings.model_copy(update={"ui_keys": (key,)})


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the server's pid, port and log go (``.stack/`` for the demo)."""
    state = tmp_path / "stack-state"
    yield state
    stop_ui_server(state)  # whatever a failed assertion left running


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_printed_url_opens_the_lead_after_the_demo(
    demo_settings: Settings, ui_stack: UiStack, state_dir: Path
) -> None:
    lead = ui_stack.good.lead_id
    ui = serve_for_demo(demo_settings, lead, state_dir, port=free_port())
    assert ui.key_file is not None and ui.key_file.exists()
    assert ui.key_file.stat().st_mode & 0o077 == 0  # the key is readable by its owner only
    key = ui.key_file.read_text().strip()

    page = httpx.get(ui.lead_url)
    assert page.status_code == 200 and f'data-lead-id="{lead}"' in page.text
    api = httpx.get(
        f"{ui.server.url}/ui/api/leads/{lead}", headers={"Authorization": f"Bearer {key}"}
    )
    assert api.status_code == 200
    assert [e["id"] for e in api.json()["events"]] == [e["id"] for e in ui_stack.good.events]
    assert (state_dir / "ui" / "server.pid").read_text().strip() == str(ui.server.pid)

    # The next demo finds it running: same process, same URL.
    again = serve_for_demo(demo_settings, lead, state_dir, port=free_port())
    assert (again.server.pid, again.lead_url) == (ui.server.pid, ui.lead_url)

    assert stop_ui_server(state_dir)
    assert not _listening(ui.server.port)
    assert running_ui_server(state_dir) is None
    assert not (state_dir / "ui" / "server.pid").exists()


def test_a_taken_port_means_another_port(demo_settings: Settings, state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ui = serve_for_demo(demo_settings, "01ANYLEAD", state_dir, port=busy)
        assert ui.server.port != busy
        assert httpx.get(f"{ui.server.url}/healthz").status_code == 200


def test_make_down_stops_it(demo_settings: Settings, state_dir: Path) -> None:
    """``stack/down.sh``'s own ``down_ui``, run against this test's state directory (the
    rest of down.sh would stop the shared stack)."""
    ui = serve_for_demo(demo_settings, "01ANYLEAD", state_dir, port=free_port())
    script = (
        f'source "{DOWN_SH.parent}/lib/common.sh"; STACK_DIR="{state_dir}";'
        f' eval "$(sed -n "/^down_ui() {{/,/^}}/p" "{DOWN_SH}")"; down_ui'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"ui: stopped (pid {ui.server.pid})" in done.stdout
    os.waitpid(ui.server.pid, 0)  # our child: reaped here, so the pid is gone for good
    assert not _listening(ui.server.port)
    assert running_ui_server(state_dir) is None
