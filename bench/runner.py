"""Running the scenarios: the shared input once, then each scenario's rounds in child processes.

A round that fails is recorded as an error of its scenario and the run goes on:
one broken scenario must not cost the figures of the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bench.results_model import ScenarioResult

console = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One invocation's shape; ``quick`` shrinks the data, not the set of scenarios."""

    run_id: str
    quick: bool
    rounds: int
    events: int  # records in the shared input topic
    partitions: int
    commit_interval_ms: int
    bootstrap: str

    @property
    def input_topic(self) -> str:
        return f"bench.{self.run_id}.input"

    @property
    def output_topic(self) -> str:
        return f"bench.{self.run_id}.output"

    def params(self, **extra: Any) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "events": self.events,
            "partitions": self.partitions,
            "commit_interval_ms": self.commit_interval_ms,
            "bootstrap": self.bootstrap,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
            **extra,
        }


# A hung round dumps its stacks this long before the harness's timeout.
_HANG_DUMP_MARGIN_S = 15.0


def run_child(name: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One round of scenario ``name`` in a fresh interpreter; its figures."""
    # faulthandler: a crash in C (librdkafka, fastavro) leaves the Python stack on stderr,
    # and so does a round that hangs: the child dumps every thread's stack and exits a
    # little before the timeout would kill it without a word.
    hang_s = max(timeout_s - _HANG_DUMP_MARGIN_S, timeout_s / 2)
    argv = [
        *(sys.executable, "-X", "faulthandler", "-m", "bench.child"),
        *(name, json.dumps(params), f"{hang_s:.0f}"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603 - our own interpreter and module
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = (done.stderr or done.stdout).strip()
        if "most recent call first" in err:  # a stack dump: the threads say where it stuck
            raise RuntimeError(f"exit {done.returncode}, stacks:\n{err[-6000:]}")
        tail = err.splitlines()[-3:]
        raise RuntimeError(f"exit {done.returncode}: {' | '.join(tail)}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def run_rounds(
    result: ScenarioResult,
    config: RunConfig,
    one_round: Callable[[int], dict[str, float]],
) -> ScenarioResult:
    """``config.rounds`` rounds of ``one_round``, each figure added to ``result``."""
    for index in range(1, config.rounds + 1):
        started = time.monotonic()
        try:
            figures = one_round(index)
        except Exception as exc:  # recorded, and the other scenarios still run
            result.errors.append(f"round {index}: {type(exc).__name__}: {exc}")
            console.print(f"[red]{result.name} round {index} failed:[/red] {exc}")
            continue
        result.add(figures)
        shown = figures.get(result.primary, 0.0)
        console.print(
            f"{result.name} round {index}: {shown:,.1f} {result.unit}"
            f" ({time.monotonic() - started:.1f}s)"
        )
    return result


def child_scenario(
    name: str, primary: str, unit: str, config: RunConfig, timeout_s: float, **extra: Any
) -> ScenarioResult:
    """A scenario whose rounds run ``bench.scenarios.<name>.run_round`` in a child."""
    result = ScenarioResult(name, primary, unit)
    return run_rounds(
        result, config, lambda i: run_child(name, config.params(round=i, **extra), timeout_s)
    )
