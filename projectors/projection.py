"""What a projection is: a named, versioned table set and how one batch of events lands in it.

Each projection has its own migrations folder (``projectors/migrations/<name>``),
its own checkpoints and its own generations, so each can be rebuilt alone
(``leadflow replay NAME``). The tables listed in ``views`` are what readers
see, as same-named views in the serving schema (``projectors.generations``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor

from engine.pgmigrate import Migration, load_migrations
from projectors.batch import Batch

# Applies a batch's events inside the caller's transaction, with search_path
# set to the generation's schema; returns how many events were new to it.
ApplyEvents = Callable[[Cursor[Any], Batch], int]


@dataclass(frozen=True, slots=True)
class Projection:
    name: str
    views: tuple[str, ...]
    apply: ApplyEvents

    def migrations(self) -> list[Migration]:
        return load_migrations("projectors", f"migrations/{self.name}")
