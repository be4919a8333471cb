"""The run's summary: rich tables on the terminal and the full result as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def save(result: dict[str, Any], directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"chaos-{result['run_id']}.json"
    text = json.dumps(result, indent=2, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    (directory / "latest.json").write_text(text + "\n", encoding="utf-8")
    return path


def _short(ids: list[str]) -> str:
    return f"{len(ids)}" + (f" ({', '.join(ids[:2])}…)" if ids else "")


def summary_tables(result: dict[str, Any]) -> list[Table]:
    faults = Table(title=f"chaos run {result['run_id']}: faults injected")
    faults.add_column("fault")
    faults.add_column("count", justify="right")
    for kind, count in sorted(result["fault_counts"].items()):
        faults.add_row(kind, str(count))
    for error in result["fault_errors"]:
        faults.add_row(f"[red]failed: {error}[/]", "")

    sinks = Table(
        title=f"{result['leads_submitted']} leads, {result['events_expected']} events expected"
    )
    for col in ("sink", "expected", "found", "lost", "duplicated", "unexpected", "ok"):
        sinks.add_column(col, justify="left" if col == "sink" else "right")
    for s in result["sinks"]:
        sinks.add_row(
            s["sink"], str(s["expected"]), str(s["found"]), _short(s["lost"]),
            _short(s["duplicated"]), _short(s["unexpected"] + s["wrong_type"]),
            "[green]yes[/]" if s["ok"] else "[red]NO[/]",
        )  # fmt: skip
    dlq = result["dead_letter_topic"]
    sinks.add_row(
        "dead-letter topic", str(dlq["expected"]), str(dlq["found"]), str(dlq["missing"]), "",
        str(dlq["extra"]), "[green]yes[/]" if dlq["ok"] else "[red]NO[/]",
    )  # fmt: skip
    verdict = Table(title="verdict")
    verdict.add_column("check")
    verdict.add_column("result")
    verdict.add_row("leads with a wrong timeline", str(len(result["leads_with_wrong_timeline"])))
    verdict.add_row("dead letters in each store", json.dumps(result["dead_letter_objects"]))
    refusals = result.get("projector_refusals")
    if refusals is not None:
        verdict.add_row(
            "planted poison the projector refused",
            f"{refusals['found'] - refusals['extra']} of {refusals['expected']}",
        )
    refused = [r["error"].split(":")[0] for r in result.get("projector_rejects", [])]
    verdict.add_row(
        "other records the projector refused",
        ", ".join(f"{refused.count(e)} {e}" for e in sorted(set(refused))) or "none",
    )
    stuck = result["stuck_groups"]
    verdict.add_row("stuck consumer groups", json.dumps(stuck) if stuck else "none")
    verdict.add_row("worker restarts", json.dumps(result["worker_restarts"]))
    buyer = result.get("buyer")
    if buyer:
        verdict.add_row(
            "buyer posts",
            f"{buyer['requests']} posts, {buyer['unique_keys']} idempotency keys,"
            f" {buyer['duplicates']} repeated (calls out at a kill, same key);"
            f" peak {buyer['peak_in_flight']} in flight",
        )
    exits = {r: c for r, c in result.get("worker_exits", {}).items() if c}
    verdict.add_row("workers that exited by themselves", json.dumps(exits) if exits else "none")
    verdict.add_row(
        "time", f"submit {result['submit_s']}s, settle {result['settle_s']}s "
        f"({result.get('settled', 'drained')}), total {result['total_s']}s",
    )  # fmt: skip
    verdict.add_row("PASS" if result["ok"] else "FAIL", "[green]ok[/]" if result["ok"] else "[red]")
    return [faults, sinks, verdict]


def soak_table(samples: list[dict[str, Any]]) -> Table:
    roles = sorted({r for s in samples for r in s["rss_mb"]})
    groups = sorted({g for s in samples for g in (s["lag"] or {})})
    table = Table(title="soak: RSS (MB) per worker, total lag per sample")
    table.add_column("t (s)", justify="right")
    for role in roles:
        table.add_column(role, justify="right")
    table.add_column("lag (sum)", justify="right")
    for s in samples:
        lag = s["lag"]
        table.add_row(
            str(s["t_s"]),
            *[str(s["rss_mb"].get(r) or "-") for r in roles],
            str(sum(lag.values())) if lag is not None else "?",
        )
    del groups
    return table


def soak_summary_table(summary: dict[str, Any]) -> Table:
    table = Table(
        title=f"soak: {summary['samples']} samples; total lag peak {summary['max_total_lag']},"
        f" last {summary['last_total_lag']}"
    )
    for col in ("worker", "RSS start (MiB)", "end", "peak"):
        table.add_column(col, justify="left" if col == "worker" else "right")
    for role, mb in summary["rss_mb"].items():
        table.add_row(role, *(f"{mb[k]:.1f}" for k in ("start", "end", "max")))
    return table


def show(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=120)
    for table in summary_tables(result):
        console.print(table)
    if result.get("soak"):
        console.print(soak_table(result["soak"]))
    if result.get("soak_summary"):
        console.print(soak_summary_table(result["soak_summary"]))
