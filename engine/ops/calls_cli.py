"""``leadflow calls status``: each buyer's and service's breaker, calls in flight and latency.

Read from the calling workers' metrics (``engine.runtime.calls.status``): the command
works wherever the ``leadflow run`` expositions answer, with no Kafka or Postgres.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.ops.output import AsJson, print_json
from engine.runtime.calls.status import fetch_status, metrics_urls
from engine.settings import get_settings

calls_app = typer.Typer(
    no_args_is_help=True, help="Calls to buyers and services: breakers, in flight, latency."
)
console = Console(stderr=True)

_COLOURS = {"closed": "green", "half_open": "yellow", "open": "red"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


@calls_app.command()
def status(
    url: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            help="A `leadflow run` metrics URL (repeatable; default: LEADFLOW_CALLS_METRICS_URLS,"
            " else this host's LEADFLOW_METRICS_PORT).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Per destination: breaker state, calls in flight, answered/failed/refused, p50/p95."""
    urls = url or metrics_urls(get_settings())
    if not urls:
        console.print(
            "No metrics to read: give --url, or set LEADFLOW_CALLS_METRICS_URLS, or run the"
            " workers with LEADFLOW_METRICS_PORT."
        )
        raise typer.Exit(2)
    sources = fetch_status(urls)
    if as_json:
        print_json(sources)
    else:
        table = Table(
            "destination",
            "breaker",
            "in flight",
            "answered",
            "failed",
            "refused",
            "p50",
            "p95",
            "from",
        )
        for source in sources:
            if source.error is not None:
                table.add_row("-", f"[red]{source.error}[/]", "", "", "", "", "", "", source.url)
            for row in source.destinations:
                breaker = " + ".join(f"[{_COLOURS[s]}]{s}[/]" for s in row.breaker) or "-"
                table.add_row(
                    row.destination,
                    breaker,
                    f"{row.in_flight:,}",
                    f"{row.answered:,}",
                    f"{row.failed:,}",
                    f"{row.refused:,}",
                    _ms(row.p50_ms),
                    _ms(row.p95_ms),
                    source.url,
                )
        Console().print(table)
    if all(source.error is not None for source in sources):
        raise typer.Exit(1)
