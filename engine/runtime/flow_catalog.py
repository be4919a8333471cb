"""The applied flows, as the API process knows them: the registry topic, re-read when asked.

A flow applied a moment ago must be reachable at once, so an unknown flow id
triggers a re-read; re-reads are spaced by ``min_interval`` so that requests
for flows that do not exist cannot turn into a read per request.
"""

from __future__ import annotations

import asyncio
import time

from engine.flows import Flow
from engine.runtime.registry import FlowRegistry
from engine.settings import Settings


class FlowCatalog:
    def __init__(self, settings: Settings, min_interval: float = 1.0, max_age: float = 5.0) -> None:
        self._registry = FlowRegistry(settings)
        self._lock = asyncio.Lock()
        self._read_at = float("-inf")
        self._min_interval = min_interval
        self._max_age = max_age  # a known flow is re-read this often, to follow new versions
        self._background: asyncio.Task[None] | None = None

    async def _refresh(self, older_than: float) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < older_than:
                return  # another request refreshed meanwhile
            await asyncio.to_thread(self._registry.refresh, 5.0)
            self._read_at = time.monotonic()

    async def get(self, flow_id: str) -> Flow | None:
        flow = self._registry.get(flow_id)
        if flow is None:
            await self._refresh(self._min_interval)
        elif time.monotonic() - self._read_at > self._max_age and self._background is None:
            # Known flows are answered at once; a new version is picked up behind them.
            self._background = asyncio.create_task(self._refresh(self._max_age))
            self._background.add_done_callback(self._refreshed)
        return self._registry.get(flow_id)

    @property
    def up_to_date(self) -> bool:
        """Whether the last re-read reached the end of the registry topic: only then does
        an unknown flow id mean that no such flow is applied."""
        return self._registry.caught_up

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._background = None
        if not task.cancelled():
            task.exception()  # retrieved: if the registry failed, the flows read before serve on

    def close(self) -> None:
        self._registry.close()
