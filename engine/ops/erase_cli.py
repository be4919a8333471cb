"""``leadflow erase``: forget a person (crypto-shredding, ``engine.ops.erasure``).

Leads are named by id, or found by email or phone through the keyed-hash index
(``engine_person_index``: no clear value stored). First, in one transaction, each lead's
key row is deleted and a tombstone left: from then on every copy of its sealed values
reads ``[erased]``, and a replay never gives it a new key. Then its Postgres rows, its
per-event objects and the export files holding it are overwritten or deleted, and
``lead.erased`` is recorded on the flow's feedback events topic.

Exit codes: 0 erased (and cleaned up); 1 not found (nobody recorded under that id,
email or phone: nothing changed); 2 an error (a store unreachable, no master key);
3 erased (keys gone, unreadable everywhere) but the clean-up did not finish: run the
same command again. Idempotent: the same command run again finishes what a crash left
(the person index is kept until the end for that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.errors import LeadflowError
from engine.flows import Flow, load_flow
from engine.ops.erasure import erase_now, finish_erasures
from engine.runtime.registry import read_flows
from engine.sealing import load_master_key, master_key_from_env
from engine.settings import Settings, get_settings
from engine.state.keys import find_person
from engine.state.postgres import connect, migrate_state

console = Console(stderr=True)

NOT_FOUND = 1
UNFINISHED = 3


def _find(settings: Settings, email: str | None, phone: str | None) -> set[str]:
    master = load_master_key(settings) or master_key_from_env()
    if master is None:
        raise LeadflowError(
            "finding a person by email or phone needs the master key"
            " (LEADFLOW_MASTER_KEY or LEADFLOW_MASTER_KEY_FILE)"
        )
    found: set[str] = set()
    with connect(settings) as conn, conn.cursor() as cur:
        for kind, value in (("email", email), ("phone", phone)):
            if value is not None:
                found.update(find_person(cur, master, kind, value))
    return found


def _flows(settings: Settings, files: list[Path]) -> dict[str, Flow]:
    flows = {f.id: f for f in read_flows(settings)}
    flows.update({f.id: f for f in map(load_flow, files)})
    return flows


def erase(
    lead: Annotated[
        list[str] | None, typer.Option("--lead", help="A lead id (repeatable).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Every lead of this email.")] = None,
    phone: Annotated[str | None, typer.Option(help="Every lead of this phone.")] = None,
    flow_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--flow-file", "-f", help="A flow not in the registry (its destinations are searched)."
        ),
    ] = None,
) -> None:
    """Forget a person: delete their leads' keys (unreadable everywhere at once), then
    overwrite their rows, delete their objects and exports, record lead.erased.
    Exit 1: not found; 3: erased but clean-up unfinished (run it again)."""
    if not lead and email is None and phone is None:
        raise typer.BadParameter("give --lead, --email or --phone")
    settings = get_settings()
    migrate_state(settings)
    wanted = set(lead or [])
    if email is not None or phone is not None:
        wanted |= _find(settings, email, phone)
    erased, deleted = erase_now(settings, sorted(wanted)) if wanted else ([], 0)
    if not erased:
        console.print("not found: no lead is recorded under that id, email or phone")
        raise typer.Exit(NOT_FOUND)
    console.print(f"erased {len(erased)} lead(s) ({deleted} key(s) deleted now)")
    for lead_id in erased:
        print(lead_id)
    # Every unfinished tombstone, not only these: an earlier erase that stopped half way
    # is finished by the next one.
    results = finish_erasures(settings, _flows(settings, flow_file or []))
    for r in results:
        batched = (
            f", batched objects keep ciphertext only: {', '.join(r.batched)}" if r.batched else ""
        )
        console.print(
            f"{r.lead_id}: {r.rows} row(s) overwritten, {r.objects_deleted} object(s) deleted,"
            f" {r.exports_removed} export(s) removed{batched}"
            + (f"; lead.erased on {r.event_topic}" if r.event_topic else "")
        )
        if r.problem:
            console.print(f"[yellow]{r.lead_id}: not finished: {r.problem}[/]")
    if any(r.problem for r in results):
        raise typer.Exit(UNFINISHED)
