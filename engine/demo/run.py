"""``make demo``: submit fake leads, run every worker, and show what the events say.

Runs the real thing - workers as processes on the local stack - and finishes
when every submitted lead has its ``flow.completed`` event in Postgres and
every one of their events is an object in each destination.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.demo.buyer import BuyerServer
from engine.demo.master_key import ensure_demo_master_key
from engine.demo.report import counts_table, destinations_table, timeline_table
from engine.demo.ui_server import UiServerError, serve_for_demo
from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.flows import Flow, RecipientStep, load_flow
from engine.intake.fake import fake_leads
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import publish_feedback
from engine.runtime.sealer import LeadSealer
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.supervisor import role_names, supervise
from projectors.generations import migrate_database
from projectors.queries import completed_count, event_counts_for_leads, lead_timeline
from projectors.store import Connection, connect

console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _buyer_ports(flow: Flow) -> set[int]:
    return {
        s.settings.url.port or 80
        for s in flow.steps
        if isinstance(s, RecipientStep) and s.settings.url.host in ("127.0.0.1", "localhost")
    }


def _wait(description: str, total: int, count: Callable[[], int], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task(description, total=total)
        done = 0
        while time.monotonic() < deadline:
            done = count()
            progress.update(task, completed=done)
            if done >= total:
                return done
            time.sleep(0.5)
    return done


def _shared_start(texts: list[str]) -> str:
    """The longest start all ``texts`` share (that of the first and last in sort order)."""
    first, last = min(texts, default=""), max(texts, default="")
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def _wait_for_objects(
    settings: Settings, dest: Destination, lead_ids: list[str], expected: int, timeout: float
) -> int:
    store = open_store(dest, settings)
    root = directory(dest.prefix)
    # Lead ids start with their submission time, so this run's leads share a prefix:
    # one listing of it per round, not one per lead (Azurite answers each listing by
    # scanning its container, and earlier runs' objects stay there).
    ours = set(lead_ids)
    shared = f"{root}{_shared_start(lead_ids)}"

    def objects() -> int:
        keys = store.list_keys(shared)
        return sum(1 for key in keys if key[len(root) :].split("/", 1)[0] in ours)

    return _wait(f"objects in {dest.kind}:{dest.bucket}", expected, objects, timeout)


def _send_feedback(
    settings: Settings, conn: Connection, lead_ids: list[str], timeout: float
) -> None:
    """A few buyers report back: some delivered leads converted, some were returned."""
    rows = conn.execute(
        "SELECT id, lead_id FROM events WHERE type = 'recipient.delivered' AND lead_id = ANY(%s)"
        " ORDER BY id LIMIT 40",
        (lead_ids,),
    ).fetchall()
    sent = 0
    for n, (event_id, lead_id) in enumerate(rows):
        # Every fourth lead is returned; every fifth converts first and is returned later.
        reports = [("return", "Disconnected number")] if n % 4 == 0 else [("conversion", "Sold")]
        if n % 5 == 0:
            reports = [("conversion", "Sold"), ("return", "Duplicate of an earlier lead")]
        for kind, reason in reports:
            body = orjson.dumps({"event_id": event_id, "type": kind, "reason": reason})
            publish_feedback(settings, body, lead_id.encode())  # a lead's feedback in order
            sent += 1

    def processed() -> int:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE type = 'feedback.processed' AND lead_id = ANY(%s)",
            (lead_ids,),
        ).fetchone()
        return int(row[0]) if row else 0

    _wait("buyer feedback processed", sent, processed, timeout)


def _print_ui_url(settings: Settings, lead_id: str) -> None:
    """The workers stop with the demo; the UI server stays (``make down`` stops it), so the
    URL printed here opens a real lead's timeline after the demo has ended."""
    try:
        ui = serve_for_demo(settings, lead_id)
    except UiServerError as exc:
        console.print(f"[yellow]Operator UI: could not start it in the background[/]: {exc}")
        console.print("Run [bold]leadflow serve[/] and open /ui/ on it instead.")
        return
    console.print(
        f"Operator UI: [bold]{ui.lead_url}[/] (server pid {ui.server.pid}, log"
        f" {ui.server.log}; stopped by [bold]make down[/])"
    )
    if ui.key_file is not None:
        console.print(f"API key: the contents of {ui.key_file} (paste it once per browser tab)")


def run_demo(settings: Settings, flow_file: Path, leads: int, timeout: float) -> None:
    flow = load_flow(flow_file)
    key_file = ensure_demo_master_key(settings, flow)
    if key_file is not None:
        console.print(f"sealing personal fields under the demo master key in {key_file}")
    buyers = [BuyerServer(port, mix=True) for port in _buyer_ports(flow)]
    for b in buyers:
        b.start_in_thread()
    prepare_topics(settings, flow)
    migrate_database(settings)

    # The workers' logs would bury the demo's tables: they show warnings only.
    os.environ.setdefault("LEADFLOW_LOG_LEVEL", "WARNING")
    stop = threading.Event()
    workers = threading.Thread(
        target=supervise, args=(role_names(flow), flow_file, stop), daemon=True
    )
    workers.start()
    try:
        console.rule(f"[bold]leadflow demo[/]: flow {flow.id}, {leads} leads")
        sealer = LeadSealer.for_flow(flow, settings)
        fake = fake_leads(leads, seed=int(time.time()))
        lead_ids = publish_leads(settings, flow.id, fake, sealer)
        if sealer is not None:
            sealer.close()
        console.print(f"published {len(lead_ids)} leads to the intake topic")

        with connect(settings) as conn:

            def finished() -> int:
                return completed_count(conn, lead_ids)

            done = _wait("leads completed (Postgres)", len(lead_ids), finished, timeout)
            if done < len(lead_ids):
                raise LeadflowError(
                    f"only {done}/{len(lead_ids)} leads completed within {timeout:.0f}s"
                )
            _send_feedback(settings, conn, lead_ids, timeout)
            counts = event_counts_for_leads(conn, lead_ids)
            total_events = sum(c for _, _, c in counts)
            console.print(counts_table(counts))
            sample = next(
                (
                    lid
                    for lid in lead_ids
                    if any(e["type"] == "recipient.delivered" for e in lead_timeline(conn, lid))
                ),
                lead_ids[0],
            )
            console.print(f"lead [bold]{sample}[/] (leadflow events --lead {sample}):")
            console.print(timeline_table(lead_timeline(conn, sample)))

        rows = []
        for dest in flow.destinations:
            if dest.enabled:
                n = _wait_for_objects(settings, dest, lead_ids, total_events, timeout)
                rows.append(
                    (f"{dest.kind}://{dest.bucket}", f"{dest.prefix}/<lead_id>/<event_id>.json", n)
                )
        console.print(destinations_table(rows))
        _print_ui_url(settings, sample)
        console.rule("[green]demo finished[/]")
    finally:
        stop.set()
        workers.join(60)
        for b in buyers:
            b.stop()
