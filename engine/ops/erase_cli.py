"""``leadflow erase``: forget a person by deleting their leads' data keys (crypto-shredding).

Leads are named by id, or found by email or phone through the keyed-hash index
(``engine_person_index``: no clear value stored). Each lead's key row is deleted and a
tombstone left (``engine_erased_leads``), in one transaction: from then on every copy of
its sealed values - topics, Postgres, streamed objects - reads ``[erased]``, and a
replay never gives it a new key. Idempotent; an unknown person is "not found", exit 1.
Only a flow that seals (``sensitive_fields``) has anything to erase this way.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from engine.errors import LeadflowError
from engine.sealing import load_master_key, master_key_from_env
from engine.settings import get_settings
from engine.state.keys import erase_leads, find_person
from engine.state.postgres import connect, migrate_state

console = Console(stderr=True)


def erase(
    lead: Annotated[
        list[str] | None, typer.Option("--lead", help="A lead id (repeatable).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Every lead of this email.")] = None,
    phone: Annotated[str | None, typer.Option(help="Every lead of this phone.")] = None,
) -> None:
    """Delete the data keys of a person's leads: their sealed fields read as erased everywhere."""
    if not lead and email is None and phone is None:
        raise typer.BadParameter("give --lead, --email or --phone")
    settings = get_settings()
    migrate_state(settings)
    ids = set(lead or [])
    with connect(settings) as conn:
        if email is not None or phone is not None:
            master = load_master_key(settings) or master_key_from_env()
            if master is None:
                raise LeadflowError(
                    "finding a person by email or phone needs the master key"
                    " (LEADFLOW_MASTER_KEY or LEADFLOW_MASTER_KEY_FILE)"
                )
            with conn.cursor() as cur:
                for kind, value in (("email", email), ("phone", phone)):
                    if value is not None:
                        ids.update(find_person(cur, master, kind, value))
        if not ids:
            console.print("not found: no lead is recorded under that email or phone")
            raise typer.Exit(1)
        with conn.transaction(), conn.cursor() as cur:
            deleted = erase_leads(cur, sorted(ids))
    console.print(f"erased {len(ids)} lead(s) ({deleted} key(s) deleted now)")
    for lead_id in sorted(ids):
        print(lead_id)
