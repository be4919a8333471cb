"""The results document (JSON in ``bench/results/``) and the table printed at the end.

The ratios are the point of the benchmark (issue #7): each one is computed from
two medians of the same invocation, and shown next to the target it aims for.
Targets are goals to report against, never assertions.
"""

from __future__ import annotations

import importlib.metadata
import json
import operator
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.results_model import ScenarioResult
from bench.stats import ratio

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True, slots=True)
class Target:
    """A figure or ratio the issue aims for: ``value op bound``."""

    op: str  # ">=", "<=" or "<"
    bound: float

    def met(self, value: float) -> bool:
        compare: dict[str, Callable[[float, float], bool]] = {
            ">=": operator.ge,
            "<=": operator.le,
            "<": operator.lt,
        }
        return compare[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class RatioSpec:
    label: str
    numerator: tuple[str, str | None]  # (scenario, figure; None: its primary)
    denominator: tuple[str, str | None]
    target: Target | None


RATIOS = (
    RatioSpec("step / passthrough", ("step", None), ("passthrough", None), Target(">=", 0.6)),
    # Issue #18: the cost of sealing personal fields in a step (<= 10 % slower).
    RatioSpec(
        "step events/s plain / sealed", ("step", None), ("step_sealed", None), Target("<=", 1.10)
    ),
    # The same cost as CPU per event (the process's, over the same span): steadier than the
    # rate on a machine whose other processes take the cores in turn.
    RatioSpec(
        "step CPU/event sealed / plain",
        ("step_sealed", "cpu_ms_per_event"),
        ("step", "cpu_ms_per_event"),
        Target("<=", 1.10),
    ),
    RatioSpec("leadflow step / Quix Streams", ("step", None), ("peer", None), Target(">=", 2.0)),
    # Issue #19: registry mode (Confluent wire format) costs the step nothing measurable.
    RatioSpec(
        "step registry / single-object",
        ("step", "registry_events_s"),
        ("step", None),
        Target(">=", 0.95),
    ),
    RatioSpec(
        "confluent AvroSerializer / leadflow framed encode",
        ("step", "encode_avro_serializer_events_s"),
        ("step", "encode_framed_events_s"),
        None,
    ),
    RatioSpec(
        "projector / bare COPY",
        ("projector", None),
        ("projector", "bare_copy_events_s"),
        Target(">=", 0.5),
    ),
    RatioSpec(
        "step RSS after / before 1M events",
        ("step_rss", "rss_last_mb"),
        ("step_rss", "rss_first_mb"),
        Target("<=", 1.05),
    ),
    RatioSpec(
        "archive replay / topic replay",
        ("replay", "archive_events_s"),
        ("replay", None),
        Target(">=", 0.8),
    ),
    # Issue #18: what a streamer process costs over the store itself (same server, same
    # concurrency): objects/s per event, MB/s batched.
    *(
        RatioSpec(
            f"streamer {store} {label} / bare PUT loop",
            ("streamer", f"{store}_{case}.{figure}"),
            ("streamer", f"{store}_{case}.bare_{figure}"),
            None,
        )
        for store in ("s3", "azure")
        for case, label, figure in (
            ("per_event", "per-event objects/s", "objects_s"),
            ("batched", "batched MB/s", "mb_s"),
        )
    ),
    RatioSpec(
        "scale_out CPU/event, 4 processes / 1",
        ("scale_out", "p4.cpu_ms_per_event"),
        ("scale_out", "p1.cpu_ms_per_event"),
        Target("<=", 1.2),
    ),
    RatioSpec("e2e MB/s / broker produce MB/s", ("e2e", "mb_s"), ("broker", "produce_mb_s"), None),
    RatioSpec(
        "passthrough MB/s / broker produce MB/s",
        ("passthrough", "mb_s"),
        ("broker", "produce_mb_s"),
        None,
    ),
)

# Absolute figures with a target of their own (scenario, figure, target).
FIGURE_TARGETS: tuple[tuple[str, str, Target], ...] = (
    ("e2e", "latency_p99_ms", Target("<=", 250)),
    ("e2e", "overhead_ms_median", Target("<", 1)),
    # Issue #16: one recipient process at a 300 ms buyer, and what it adds to the buyer's p99.
    ("slow_buyer", "leads_s", Target(">=", 200)),
    ("slow_buyer", "e2e_p99_over_buyer_p99_ms", Target("<=", 150)),
    # Issue #16: p99 accepted -> winner posted within the bid window (750 ms) + post p99.
    ("auction", "posted_p99_over_budget_ms", Target("<=", 0)),
)


def ratios(results: Mapping[str, ScenarioResult]) -> dict[str, dict[str, Any]]:
    """Every ratio whose two sides were measured, with its target and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for spec in RATIOS:
        num, den = results.get(spec.numerator[0]), results.get(spec.denominator[0])
        if num is None or den is None:
            continue
        value = ratio(num.summary(spec.numerator[1]), den.summary(spec.denominator[1]))
        if value is None:
            continue
        out[spec.label] = {
            "value": value,
            "target": str(spec.target) if spec.target else None,
            "met": spec.target.met(value) if spec.target else None,
        }
    for scenario, figure, target in FIGURE_TARGETS:
        result = results.get(scenario)
        summary = result.summary(figure) if result is not None else None
        if summary is not None:
            out[f"{scenario} {figure}"] = {
                "value": summary.median,
                "target": str(target),
                "met": target.met(summary.median),
            }
    return out


def machine() -> dict[str, Any]:
    """Enough about the machine to tell two results files apart (load: it is shared)."""

    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "confluent_kafka": importlib.metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
    }


def document(
    run: Mapping[str, Any], results: Mapping[str, ScenarioResult], started: datetime
) -> dict[str, Any]:
    """The JSON results document: run parameters, machine, scenarios, ratios."""
    return {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": dict(run),
        "machine": machine(),
        "scenarios": {name: result.as_dict() for name, result in results.items()},
        "ratios": ratios(results),
    }


def write(doc: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """``<timestamp>.json`` and a copy as ``latest.json``; returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(str(doc["started_at"])).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}.json"
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    path.write_text(text, encoding="utf-8")
    (directory / "latest.json").write_text(text, encoding="utf-8")
    return path


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def print_tables(doc: Mapping[str, Any], console: Console | None = None) -> None:
    """Figures (median, min, max per scenario), then ratios and targets."""
    console = console or Console()
    figures = Table(title=f"leadflow bench - run {doc['run'].get('run_id', '?')}")
    for column in ("scenario", "figure", "median", "min", "max", "unit"):
        numeric = column in ("median", "min", "max")
        figures.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for name, scenario in doc["scenarios"].items():
        primary = scenario["primary"]
        ordered = sorted(scenario["figures"].items(), key=lambda kv: kv[0] != primary)
        for i, (figure, s) in enumerate(ordered):
            label = f"[bold]{escape(figure)}[/bold]" if figure == primary else escape(figure)
            figures.add_row(
                name if i == 0 else "",
                label,
                _fmt(s["median"]),
                _fmt(s["min"]),
                _fmt(s["max"]),
                s["unit"],
            )
        for error in scenario["errors"][:1]:
            figures.add_row(name, "[red]error[/red]", "", "", "", escape(error[:80]))
    console.print(figures)
    table = Table(title="ratios and targets (medians)")
    for column in ("ratio", "value", "target", "met"):
        table.add_column(column)
    for label, r in doc["ratios"].items():
        met = "" if r["met"] is None else ("[green]yes[/green]" if r["met"] else "[red]no[/red]")
        table.add_row(label, f"{r['value']:.3f}", r["target"] or "", met)
    console.print(table)
    for name, scenario in doc["scenarios"].items():
        for note in scenario["notes"]:
            console.print(f"[dim]{name}: {escape(note)}[/dim]")
