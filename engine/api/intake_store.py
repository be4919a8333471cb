"""Idempotency keys and pings in Postgres, for the HTTP intake (async, pooled).

An idempotency key is claimed with one insert: the first request with a key
creates the row and its lead id; every retry finds that row, so it is the
same lead (same id, never published twice once published) and, when the
first request got an answer, the same answer. Driver errors become
``IntakeStoreError``; nothing above imports psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from engine.errors import LeadflowError
from engine.pgmigrate import apply_migrations, load_migrations
from engine.settings import Settings
from engine.state.postgres import checked_schema, connect
from engine.transport import postgres_tls


class IntakeStoreError(LeadflowError):
    """Postgres could not answer: the request cannot be made idempotent right now."""


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key's row as this request found (or made) it."""

    lead_id: str
    created: bool
    same_body: bool
    published: bool
    age_seconds: float
    answer_status: int | None
    answer: dict[str, Any] | None


_CLAIM = """
INSERT INTO engine_intake_requests (flow_id, source_id, idempotency_key, lead_id, body_sha256)
VALUES (%(flow)s, %(source)s, %(key)s, %(lead)s, %(sha)s)
ON CONFLICT DO NOTHING
RETURNING lead_id
"""

_FIND = """
SELECT lead_id, body_sha256 = %(sha)s, published_at IS NOT NULL,
       extract(epoch FROM now() - created_at), answer_status, answer
FROM engine_intake_requests
WHERE flow_id = %(flow)s AND source_id = %(source)s AND idempotency_key = %(key)s
"""

_PUBLISHED = """
UPDATE engine_intake_requests SET published_at = coalesce(published_at, now())
WHERE flow_id = %(flow)s AND source_id = %(source)s AND idempotency_key = %(key)s
"""

_ANSWERED = """
UPDATE engine_intake_requests SET answer_status = %(status)s, answer = %(answer)s
WHERE flow_id = %(flow)s AND source_id = %(source)s AND idempotency_key = %(key)s
  AND answer IS NULL
"""

_ADD_PING = """
INSERT INTO engine_intake_pings (ping_id, flow_id, source_id, price, expires_at)
VALUES (%(ping)s, %(flow)s, %(source)s, %(price)s, %(expires)s)
"""

# The first post that names the ping takes it; the same lead asking again
# (a retried post) finds it its own.
_TAKE_PING = """
UPDATE engine_intake_pings SET lead_id = coalesce(lead_id, %(lead)s)
WHERE ping_id = %(ping)s AND flow_id = %(flow)s AND source_id = %(source)s
RETURNING price, expires_at > now(), lead_id = %(lead)s
"""


def migrate_intake(settings: Settings) -> list[str]:
    """Create the intake tables in ``settings.db_schema`` (idempotent, safe concurrently)."""
    schema = checked_schema(settings.db_schema)
    with connect(settings) as conn, conn.transaction(), conn.cursor() as cur:
        return apply_migrations(
            cur, schema, "engine_intake_migrations", load_migrations("engine.api")
        )


class IntakeStore:
    def __init__(self, settings: Settings, max_size: int = 10) -> None:
        schema = checked_schema(settings.db_schema)
        self._pool = AsyncConnectionPool(
            settings.database_url.get_secret_value(),
            min_size=1,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                "options": f"-c search_path={schema}",
                "application_name": f"leadflow-intake/{schema}",
                **postgres_tls(settings),
            },
            open=False,
        )

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def _run(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise IntakeStoreError(f"intake store unavailable: {type(exc).__name__}") from exc

    async def claim(
        self, flow_id: str, source_id: str, key: str, new_lead_id: str, body_sha256: bytes
    ) -> Claim:
        params = {
            "flow": flow_id,
            "source": source_id,
            "key": key,
            "lead": new_lead_id,
            "sha": body_sha256,
        }
        if await self._run(_CLAIM, params):
            return Claim(new_lead_id, True, True, False, 0.0, None, None)
        rows = await self._run(_FIND, params)
        if not rows:  # deleted between the two statements (expiry): claim again
            return await self.claim(flow_id, source_id, key, new_lead_id, body_sha256)
        lead_id, same, published, age, status, answer = rows[0]
        return Claim(lead_id, False, same, published, float(age), status, answer)

    async def mark_published(self, flow_id: str, source_id: str, key: str) -> None:
        await self._run(_PUBLISHED, {"flow": flow_id, "source": source_id, "key": key})

    async def save_answer(
        self, flow_id: str, source_id: str, key: str, status: int, answer: dict[str, Any]
    ) -> None:
        params = {
            "flow": flow_id,
            "source": source_id,
            "key": key,
            "status": status,
            "answer": Jsonb(answer),
        }
        await self._run(_ANSWERED, params)

    async def add_ping(
        self, ping_id: str, flow_id: str, source_id: str, price: float | None, ttl_seconds: int
    ) -> None:
        expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
        params = {
            "ping": ping_id,
            "flow": flow_id,
            "source": source_id,
            "price": price,
            "expires": expires,
        }
        await self._run(_ADD_PING, params)

    async def take_ping(
        self, ping_id: str, flow_id: str, source_id: str, lead_id: str
    ) -> tuple[float | None, str | None]:
        """The ping's price for this lead, or why the post cannot have it."""
        params = {"ping": ping_id, "flow": flow_id, "source": source_id, "lead": lead_id}
        rows = await self._run(_TAKE_PING, params)
        if not rows:
            return None, f"Unknown ping: {ping_id}"
        price, live, ours = rows[0]
        if not ours:
            return None, f"Ping {ping_id} was already used by another lead"
        if not live:
            return None, f"Ping {ping_id} has expired"
        if price is None:
            return None, f"Ping {ping_id} had no bid"
        return float(price), None
