"""The demo's master key file: made once, private, never over an operator's own key."""

from __future__ import annotations

import stat
from pathlib import Path

from engine.demo.master_key import ensure_demo_master_key
from engine.flows import load_flow
from engine.sealing import load_master_key
from engine.settings import Settings

DEMO = Path(__file__).parents[3] / "flows" / "demo.yaml"


def test_the_demo_makes_a_private_key_file_once_and_points_the_environment_at_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".stack" / "master.key"
    flow = load_flow(DEMO)
    environ: dict[str, str] = {}
    assert ensure_demo_master_key(Settings(), flow, path, environ) == path
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert environ == {"LEADFLOW_MASTER_KEY_FILE": str(path.resolve())}
    key = load_master_key(Settings(master_key_file=Path(environ["LEADFLOW_MASTER_KEY_FILE"])))
    assert key is not None and len(key.secret) == 32
    ensure_demo_master_key(Settings(), flow, path, {})
    assert path.read_text() == first  # the same key on every run: the data stays readable


def test_an_operators_key_wins_and_a_flow_that_does_not_seal_needs_none(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    operator = {"LEADFLOW_MASTER_KEY_FILE": "/somewhere/else.key"}
    assert ensure_demo_master_key(Settings(), load_flow(DEMO), path, operator) is None
    assert operator == {"LEADFLOW_MASTER_KEY_FILE": "/somewhere/else.key"}
    plain = load_flow(DEMO).model_copy(update={"sensitive_fields": []})
    assert ensure_demo_master_key(Settings(), plain, path, {}) is None
    assert not path.exists()
