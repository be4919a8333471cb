"""Test tiers say what they need: a test that kills processes with ``kill -9`` at chosen
moments is marked ``serial``, so ``make test`` runs it alone, after the rest.

Such a test aims its kills at a moment (mid-batch, half way through a rebuild) and a
machine busy with the parallel tests moves that moment; ``tests/projectors/test_crash.py``
ran among them unmarked. Read from the test files themselves (no services needed): every
``test_*`` function that sends SIGKILL (``Popen.kill()``, ``send_signal(SIGKILL)``,
``os.kill``/``os.killpg`` with SIGKILL) must carry the marker, on itself or on its module.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def _is_sigkill(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "SIGKILL") or (
        isinstance(node, ast.Name) and node.id == "SIGKILL"
    )


def sends_sigkill(function: ast.FunctionDef) -> bool:
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "kill" and isinstance(func, ast.Attribute) and not node.args:
            return True  # subprocess.Popen.kill(): SIGKILL
        if name in ("send_signal", "kill", "killpg") and any(map(_is_sigkill, node.args)):
            return True
    return False


def _says_serial(node: ast.expr) -> bool:
    return "mark.serial" in ast.unparse(node)


def unmarked_killers(source: str) -> list[str]:
    """The ``test_*`` functions of a module that send SIGKILL without the serial marker."""
    module = ast.parse(source)
    module_serial = any(
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
        and _says_serial(stmt.value)
        for stmt in module.body
    )
    return [
        stmt.name
        for stmt in module.body
        if isinstance(stmt, ast.FunctionDef)
        and stmt.name.startswith("test_")
        and sends_sigkill(stmt)
        and not module_serial
        and not any(map(_says_serial, stmt.decorator_list))
    ]


def test_every_test_that_kills_processes_at_chosen_moments_is_serial() -> None:
    unmarked = {
        str(path.relative_to(TESTS.parent)): names
        for path in sorted(TESTS.rglob("test_*.py"))
        if (names := unmarked_killers(path.read_text(encoding="utf-8")))
    }
    assert unmarked == {}


def test_the_scan_sees_each_way_of_sending_sigkill_and_each_way_of_marking() -> None:
    # The scan above proves nothing if it misses how the tests here kill or mark.
    killers = """
import os, signal, pytest
def test_popen_kill(): procs["buyer"].kill()
def test_send_signal(): proc.send_signal(signal.SIGKILL)
def test_os_kill(): os.kill(pid, signal.SIGKILL)
def test_killpg(): os.killpg(pgid, signal.SIGKILL)
def test_sigterm_is_a_shutdown_not_a_fault(): os.killpg(pgid, signal.SIGTERM)
@pytest.mark.serial
def test_marked(): proc.kill()
def helper_not_a_test(): proc.kill()
"""
    assert unmarked_killers(killers) == [
        "test_popen_kill",
        "test_send_signal",
        "test_os_kill",
        "test_killpg",
    ]
    for pytestmark in ("pytest.mark.serial", "[pytest.mark.stack, pytest.mark.serial]"):
        assert unmarked_killers(f"pytestmark = {pytestmark}\n{killers}") == []
