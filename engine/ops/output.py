"""Machine-readable output of the listing commands (``--json``): one JSON document on stdout.

A table is for a person at a terminal: in a pipe or a narrow window rich cuts long
group, topic and schema names. Scripts read this instead; messages stay on stderr.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer

AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout (for scripts) instead of a table.")
]


def print_json(value: Any) -> None:
    """``value`` as indented JSON; datetimes as RFC 3339, dataclasses as objects."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
