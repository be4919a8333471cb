"""The ``leadflow`` command line."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.access.store import migrate_access
from engine.demo.buyer import BuyerServer
from engine.demo.buyer_realism import Realism
from engine.demo.report import timeline_table
from engine.demo.run import run_demo
from engine.errors import ConfigError, LeadflowError
from engine.flows import load_flow
from engine.intake.fake import fake_leads
from engine.logs import configure_logging
from engine.ops.alerts_cli import alerts_app
from engine.ops.calls_cli import calls_app
from engine.ops.erase_cli import erase
from engine.ops.feedback_check import check_feedback, parse_or_refuse
from engine.ops.keys_cli import keys_app
from engine.ops.offsets_cli import offsets_app
from engine.ops.output import AsJson, print_json
from engine.ops.projections_cli import projections_app, replay
from engine.ops.retention_cli import retention_app
from engine.ops.streamer_cli import streamer_app, verify_applied_destinations
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import publish_feedback
from engine.runtime.kafka.config import connection_config, route_client_logs
from engine.runtime.kafka.probe import require_kafka
from engine.runtime.registry import apply_flow, delete_flow, read_flows
from engine.runtime.sealer import LeadSealer
from engine.runtime.step_worker import prepare_topics
from engine.runtime.stopping import install_stop_handlers
from engine.sealing import require_master_key
from engine.settings import get_settings
from engine.state.postgres import migrate_state
from engine.supervisor import registry_role_problems, role_names, run_role, supervise
from engine.transport import postgres_tls, serve_tls
from projectors.exports.files import write_export
from projectors.exports.jobs import list_jobs, migrate_exports
from projectors.exports.runner import ExportWorker
from projectors.generations import migrate_database
from projectors.queries import lead_timeline
from projectors.selection import ExportQuery
from projectors.store import connect
from streamers.destination_state import migrate_destination_state

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
flow_app = typer.Typer(no_args_is_help=True, help="Flow definitions (the registry).")
app.add_typer(flow_app, name="flow")
app.add_typer(offsets_app, name="offsets")
app.add_typer(keys_app, name="keys")
app.command()(erase)
app.add_typer(projections_app, name="projections")
app.add_typer(streamer_app, name="streamer")
app.add_typer(calls_app, name="calls")
app.add_typer(alerts_app, name="alerts")
app.add_typer(retention_app, name="retention")
app.command()(replay)
console = Console(stderr=True)

FlowFile = Annotated[
    Path | None,
    typer.Option("--flow-file", "-f", help="Flow definition (default: $LEADFLOW_FLOW_FILE)."),
]


def _flow_path(flow_file: Path | None) -> Path:
    return flow_file or get_settings().flow_file


# Commands that run workers or servers: their Kafka clients keep librdkafka's own log
# lines (a worker's log is where an operator looks for them).
_LONG_RUNNING = ("run", "serve", "demo")


@app.callback()
def _setup(ctx: typer.Context) -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        # One line naming each variable, not pydantic's page (which would also echo the value).
        problems = "; ".join(
            f"LEADFLOW_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    configure_logging(settings.log_format, settings.log_level)
    if ctx.invoked_subcommand not in _LONG_RUNNING:
        route_client_logs()


@app.command()
def run(
    roles: Annotated[
        list[str] | None,
        typer.Argument(
            help="Roles to run (default: all). With -f: step ids, projector, analytics, "
            "streamer, feedback, relay; from the registry: <flow>:<step>, streamer:<flow>, "
            "projector, analytics, feedback, relay."
        ),
    ] = None,
    flow_file: Annotated[
        Path | None,
        typer.Option("--flow-file", "-f", help="Run this flow file instead of the applied flows."),
    ] = None,
) -> None:
    """Run workers in the foreground until SIGTERM/SIGINT (finish the batch, commit, close)."""

    settings = get_settings()
    require_kafka(settings)
    wanted = roles or []
    flow = load_flow(flow_file) if flow_file is not None else None
    applied = read_flows(settings) if flow is None else [flow]
    if flow is None and wanted:
        # Roles that match no applied flow would run nothing, silently and forever.
        problems = registry_role_problems(wanted, applied)
        if problems:
            raise typer.BadParameter("; ".join(problems))
    # A sealing flow's steps cannot run without the master key: say so once, here, before
    # anything is made or written (not as a worker restarted every few seconds).
    for sealing in applied:
        if sealing.seals:
            require_master_key(settings, sealing.id)
    migrate_state(settings)  # caps and duplicate checks: before any step decides
    stop = threading.Event()
    if flow is None or flow_file is None:
        if not wanted or "projector" in wanted:
            migrate_database(settings)
        install_stop_handlers(stop)
        supervise(wanted, None, stop)
        return
    wanted = wanted or role_names(flow)
    unknown = sorted(set(wanted) - set(role_names(flow)))
    if unknown:
        why = "" if "streamer" not in unknown else " (no enabled destinations: no streamer)"
        raise typer.BadParameter(
            f"unknown role(s) {', '.join(unknown)}; this flow has "
            f"{', '.join(role_names(flow))}{why}"
        )
    prepare_topics(settings, flow)
    if "projector" in wanted:
        migrate_database(settings)
    install_stop_handlers(stop)
    if len(wanted) == 1:
        run_role(wanted[0], settings, flow, stop)
    else:
        supervise(wanted, flow_file, stop)


@flow_app.command("apply")
def flow_apply(file: Annotated[Path, typer.Argument(help="Flow definition (YAML).")]) -> None:
    """Validate a flow, create its topics and record it; running workers pick it up.
    Then verify its enabled destinations (a failing one is reported and deactivated)."""

    flow = load_flow(file)  # a bad file is reported whether or not Kafka answers
    require_kafka(get_settings())
    result = apply_flow(get_settings(), flow)
    console.print(
        f"{result.type}: flow [bold]{result.flow.id}[/] version {result.flow.version}"
        + (f", topics created: {', '.join(result.created_topics)}" if result.created_topics else "")
    )
    # After recording: a destination failing verification must not hold back the flow.
    verify_applied_destinations(get_settings(), result.flow)


@flow_app.command("delete")
def flow_delete(flow_id: str) -> None:
    """Remove a flow from the registry: its workers stop; its topics and events stay."""

    require_kafka(get_settings())
    delete_flow(get_settings(), flow_id, must_exist=True)
    console.print(f"flow.deleted: {flow_id}")


@flow_app.command("list")
def flow_list(as_json: AsJson = False) -> None:
    """The applied flows, their versions and steps."""

    require_kafka(get_settings())
    flows = read_flows(get_settings())
    if as_json:
        print_json(
            [
                {
                    "id": flow.id,
                    "name": flow.name,
                    "version": flow.version,
                    "steps": [{"id": s.id, "kind": s.kind} for s in flow.steps],
                    "destinations": [
                        {"key": d.key, "kind": d.kind, "enabled": d.enabled}
                        for d in flow.destinations
                    ],
                }
                for flow in flows
            ]
        )
        return
    table = Table(title="Applied flows")
    for col in ("flow", "version", "steps", "destinations"):
        table.add_column(col)
    for flow in flows:
        steps = " → ".join(f"{s.id} ({s.kind})" for s in flow.steps)
        table.add_row(flow.id, str(flow.version), steps, str(len(flow.destinations)))
    Console().print(table)


@app.command()
def submit(
    flow_file: FlowFile = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="JSON Lines file, one lead per line.",
            # Checked by click, as a usage error naming the option: not a traceback.
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    fake: Annotated[
        int, typer.Option("--fake", help="Generate this many realistic fake leads.")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed for --fake.")] = 7,
) -> None:
    """Publish leads to the flow's intake topic and print their lead ids."""

    settings = get_settings()
    flow = load_flow(_flow_path(flow_file))
    if (file is None) == (fake == 0):
        raise typer.BadParameter("give exactly one of --file or --fake N")
    leads: list[dict[str, object] | str | bytes]
    if file is not None:
        leads = [line for line in file.read_bytes().splitlines() if line.strip()]
    else:
        leads = list(fake_leads(fake, seed))
    sealer = LeadSealer.for_flow(flow, settings)  # a sealing flow without a master key: refused
    require_kafka(settings)
    prepare_topics(settings, flow)
    try:
        ids = publish_leads(settings, flow.id, leads, sealer)
    finally:
        if sealer is not None:
            sealer.close()
    for lead_id in ids:
        print(lead_id)
    console.print(f"published {len(ids)} leads to flow [bold]{flow.id}[/]")


@app.command()
def events(
    lead: Annotated[str, typer.Option("--lead", help="Lead id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full events as JSON.")] = False,
) -> None:
    """Print one lead's timeline from the projection."""

    settings = get_settings()
    with connect(settings) as conn:
        timeline = lead_timeline(conn, lead)
    if not timeline:
        console.print(f"no events for lead {lead}")
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(
            orjson.dumps(timeline, option=orjson.OPT_INDENT_2, default=str).decode() + "\n"
        )
    else:
        Console().print(timeline_table(timeline))


class FeedbackType(StrEnum):
    conversion = "conversion"
    return_ = "return"


@app.command()
def feedback(
    event_id: Annotated[str, typer.Argument(help="The recipient event the buyer reports on.")],
    type_: Annotated[FeedbackType, typer.Option("--type", help="What the buyer reports.")],
    reason: Annotated[str | None, typer.Option(help="The buyer's reason.")] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Refuse an event the timeline projection does not hold as a delivery "
            "(recipient.*), which the feedback worker would reject.",
        ),
    ] = True,
) -> None:
    """Publish a buyer's feedback (conversion or return) to the feedback topic."""

    settings = get_settings()
    body = orjson.dumps({"event_id": event_id, "type": type_.value, "reason": reason})
    parsed = parse_or_refuse(body)  # the worker's own validation, before anything is sent
    require_kafka(settings)
    lead_id = check_feedback(settings, parsed) if check else None
    publish_feedback(settings, body, lead_id.encode() if lead_id else None)
    console.print(f"feedback published for event {event_id}")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 1,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="HTTPS: certificate chain (PEM), with --tls-key ($LEADFLOW_SERVE_TLS_CERT)."
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="HTTPS: the certificate's private key (PEM) ($LEADFLOW_SERVE_TLS_KEY)."),
    ] = None,
) -> None:
    """Serve the HTTP API with uvicorn: queries, feedback, lead intake, /metrics."""

    settings = get_settings()
    tls = serve_tls(settings, tls_cert, tls_key)
    # Checked here, in one line, rather than in each server process's first connection.
    connection_config(settings)
    postgres_tls(settings)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker is a process: /metrics sums their counters from files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="leadflow-metrics-")
    uvicorn.run(
        "engine.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; leadflow's own
        # LEADFLOW_TRUSTED_PROXIES decides instead (engine.access.guard.client_ip).
        proxy_headers=False,
    )


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply every migration: projections, engine state, export jobs, destination states
    (idempotent)."""

    settings = get_settings()
    applied = [
        *migrate_database(settings),
        *migrate_state(settings),
        *migrate_exports(settings),
        *migrate_destination_state(settings),
        *migrate_access(settings),
    ]
    console.print(f"migrations applied: {applied or 'none (up to date)'}")


@app.command()
def buyer(
    port: int = 8765,
    mix: Annotated[bool, typer.Option(help="Refuse or fail a realistic share of leads.")] = True,
    median_ms: Annotated[float, typer.Option(help="Answer latency median (0: at once).")] = 0.0,
    p99_ms: Annotated[float, typer.Option(help="Answer latency p99 (lognormal).")] = 0.0,
    timeout_fraction: Annotated[
        float, typer.Option(help="Share of requests never answered (held until the caller goes).")
    ] = 0.0,
    idempotency_header: Annotated[
        str, typer.Option(help="The header carrying each delivery's idempotency key.")
    ] = "Idempotency-Key",
    bid_price: Annotated[
        float | None, typer.Option(help="Fixed bid on pings (0: no bid); else by postal code.")
    ] = None,
    ping_ms: Annotated[float, typer.Option(help="Added to each ping's answer time.")] = 0.0,
    bid_random_seed: Annotated[
        int | None, typer.Option(help="Bid a random price on every ping, a repeated one too.")
    ] = None,
) -> None:
    """Serve the local demo buyer endpoint (what it saw: GET /stats), pings on /ping."""

    realism = Realism(median_ms, p99_ms, timeout_fraction)
    server = BuyerServer(
        port,
        mix=mix,
        realism=realism,
        idempotency_header=idempotency_header,
        bid_price=bid_price,
        ping_delay_s=ping_ms / 1000,
        bid_random_seed=bid_random_seed,
    )
    console.print(f"buyer listening on {server.url} (stats: {server.stats_url})")
    server.serve_forever()


@app.command()
def demo(
    leads: Annotated[int, typer.Option(help="How many fake leads to submit.")] = 1000,
    flow_file: FlowFile = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every lead to finish.")] = 600,
) -> None:
    """Run the whole thing end to end: workers, leads in, timelines and objects out."""

    require_kafka(get_settings())
    run_demo(get_settings(), _flow_path(flow_file), leads, timeout)


@app.command("export")
def export_events(
    flow: Annotated[str | None, typer.Option("--flow", help="Flow id.")] = None,
    lead: Annotated[str | None, typer.Option("--lead", help="Lead id.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Event type; repeat for several.")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="success, failure or error.")] = None,
    step: Annotated[str | None, typer.Option("--step", help="Step id.")] = None,
    start: Annotated[str | None, typer.Option(help="Inclusive, ISO 8601; no offset = UTC.")] = None,
    end: Annotated[str | None, typer.Option(help="Exclusive, ISO 8601; no offset = UTC.")] = None,
    format_: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Export events from the projection as CSV or JSON lines, in constant memory."""

    try:
        query = ExportQuery.model_validate(
            {"flow_id": flow, "lead_id": lead, "type": type_ or (), "outcome": outcome,
             "step_id": step, "start": start, "end": end, "format": format_}
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None
    rows = write_export(get_settings(), query, output, console)
    if output is not None:
        console.print(f"{rows:,} events written to {output}")


exports_app = typer.Typer(no_args_is_help=True, help="Export jobs (POST /exports).")
app.add_typer(exports_app, name="exports")


@exports_app.command("work")
def exports_work() -> None:
    """Run export jobs until SIGTERM/SIGINT (alongside or instead of the API's worker thread)."""

    stop = threading.Event()
    install_stop_handlers(stop)
    ExportWorker(get_settings()).run(stop)


@exports_app.command("list")
def exports_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Print the newest export jobs and their status."""

    settings = get_settings()
    migrate_exports(settings)
    with connect(settings) as conn:
        found = list_jobs(conn, limit=limit)
    if as_json:
        print_json([job.as_json() for job in found])
        return
    table = Table("id", "status", "format", "created", "rows", "bytes", "object / error")
    for job in found:
        shown = job.as_json()
        table.add_row(
            shown["id"], job.status, job.format, shown["created_at"], str(job.row_count or ""),
            str(job.byte_count or ""), job.error or job.object_key,
        )  # fmt: skip
    Console().print(table)


def main() -> None:
    try:
        app()
    except LeadflowError as exc:
        # One line however narrow the terminal (or 80 columns in a pipe), and the message
        # as it is: a flow id or a path in brackets is not rich markup.
        console.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)
        sys.exit(2)
