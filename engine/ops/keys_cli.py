"""``leadflow keys``: create, list, rotate and revoke the API's keys (``engine.access``).

A new key's plaintext is printed once, on stdout (so ``KEY=$(leadflow keys create …)``
works); only its keyed hash is stored. Everything else goes to stderr.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.access.scopes import ScopeError
from engine.access.store import (
    StoredKey,
    UnknownKeyError,
    create_key,
    list_keys,
    revoke_key,
    rotate_key,
)
from engine.ops.output import AsJson, print_json
from engine.settings import get_settings

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, rotate, revoke.")
console = Console(stderr=True)
KeyId = Annotated[str, typer.Argument(help="The key's id (leadflow keys list).")]


def _show_new(stored: StoredKey, key: str) -> None:
    console.print(
        f"key {stored.key_id} ({stored.name}): scopes {', '.join(stored.scopes)}"
        + (f"; flows {', '.join(stored.flows)}" if stored.flows is not None else "")
    )
    console.print("The key follows on stdout; it is not stored and is shown only this once.")
    sys.stdout.write(key + "\n")


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who holds it, e.g. a buyer or an operator.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            help="Repeatable: events:read, pii:read, exports, stats, flows:admin,"
            " intake:<source>|intake:*, feedback:<recipient>|feedback:*.",
        ),
    ],
    flow: Annotated[
        list[str] | None,
        typer.Option("--flow", help="Repeatable: only these flows (default: every flow)."),
    ] = None,
    rate: Annotated[
        int | None, typer.Option("--rate", min=1, help="Requests per minute for this key.")
    ] = None,
) -> None:
    """Create a key; its plaintext is printed once."""
    try:
        stored, key = create_key(get_settings(), name, scope, flow or None, rate)
    except ScopeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from None
    _show_new(stored, key)


@keys_app.command("list")
def list_(
    as_json: AsJson = False,
    revoked: Annotated[bool, typer.Option("--revoked", help="Revoked keys too.")] = False,
) -> None:
    """The keys (never their plaintext or hash)."""
    keys = list_keys(get_settings(), revoked=revoked)
    if as_json:
        print_json([k.as_json() for k in keys])
        return
    table = Table("key id", "name", "scopes", "flows", "rate/min", "created", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.name,
            ", ".join(k.scopes),
            ", ".join(k.flows) if k.flows is not None else "all",
            str(k.rate_per_minute or "default"),
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id (leadflow keys list).")],
) -> None:
    """Replace a key with a new one of the same name, scopes and flows; the old one is
    revoked at once (every API process stops taking it within api_key_cache_seconds)."""
    try:
        stored, key = rotate_key(get_settings(), key_id)
    except UnknownKeyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    _show_new(stored, key)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (leadflow keys list).")],
) -> None:
    """Revoke a key (every API process stops taking it within api_key_cache_seconds)."""
    try:
        stored = revoke_key(get_settings(), key_id)
    except UnknownKeyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"key {stored.key_id} ({stored.name}) revoked")
