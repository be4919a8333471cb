"""Rebuild one projection from the topics, blue/green: ``leadflow replay NAME``.

The rebuild fills a new *building* generation (``projectors.generations``)
while the active one keeps serving queries and keeps being written by the
live projector. Its checkpoints live in the new generation, written with
every batch, so an interrupted rebuild (Ctrl-C, kill -9, Postgres gone)
resumes where it stopped when run again.

Once every partition has been read to its end, the switch: in one
transaction it takes the active generation's row for update (so the live
projector's next batch waits), reads on until the new generation holds at
least everything the old one holds (each partition at or past the live
projector's checkpoint, so no reader sees the data go back), writes its
checkpoints under the live projector's name, activates the new generation and
re-points the views. The live projector then fails its guard, moves to the new
generation and resumes from those checkpoints: nothing is skipped or counted twice.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from engine.errors import ConfigError
from engine.runtime.kafka.clients import new_admin, new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, EofHook, fetch
from engine.runtime.kafka.offsets import OffsetQuery, list_offsets, offsets_at
from engine.runtime.schema_registry import reading_codec
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.generations import (
    Generation,
    create_building,
    current,
    drop,
    lock_active,
    migrate,
    switch,
)
from projectors.projections import projection
from projectors.store import Connection, connect
from projectors.writing import load_checkpoints, write_batch, write_checkpoints

log = structlog.get_logger(__name__)

TopicPart = tuple[str, int]
# (records written so far in this run, records to write in all, as last measured)
ProgressCallback = Callable[[int, int], None]

_POLL_S = 0.5
_WATERMARK_EVERY_S = 2.0


class SwitchTimeoutError(Exception):
    """The switch could not catch up with the live projector in time; it was rolled back."""


@dataclass(frozen=True, slots=True)
class RebuildResult:
    generation: Generation  # the one built; active when ``switched``
    records: int  # written in this run
    seconds: float
    resumed: bool
    switched: bool


def live_projector_name(settings: Settings, name: str) -> str:
    """The checkpoint key the live projector of ``name`` uses (``leadflow run``'s roles)."""
    return settings.projector_name if name == "timeline" else name


class Rebuild:
    """One rebuild of projection ``name``; ``run`` does it (or resumes it)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        from_time: datetime | None = None,
        restart: bool = False,
        batch_size: int = 2000,
        switch_timeout_s: float = 60.0,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.projection = projection(name)
        self.serving = settings.db_schema
        self.pattern = re.compile(settings.projector_pattern)
        self.projector = live_projector_name(settings, name)
        self.from_time = from_time
        self.restart = restart
        self.batch_size = batch_size
        self.switch_timeout_s = switch_timeout_s
        self.on_progress = on_progress or (lambda done, total: None)
        self.written = 0
        self._codec = reading_codec(self.settings)
        self._positions: dict[TopicPart, int] = {}
        self._heads: dict[TopicPart, int] = {}
        self._at_end: set[TopicPart] = set()
        self._admin_client: AdminClient | None = None
        self._consume_errors = ConsumeErrors(f"replay {name}")
        self._log = log.bind(projection=name)

    def _admin(self) -> AdminClient:
        """The admin client, made at its first use: building a ``Rebuild`` connects nowhere."""
        if self._admin_client is None:
            self._admin_client = new_admin(self.settings)
        return self._admin_client

    def run(self, stop: threading.Event) -> RebuildResult:
        """Build (or resume) the new generation and switch to it; returns early, switch
        not done, if ``stop`` is set (run again to resume)."""
        started = time.monotonic()
        with connect(
            self.settings, application_name=f"leadflow-replay-{self.projection.name}"
        ) as conn:
            building, resumed = self._building(conn)
            consumer = new_consumer(
                self.settings,
                f"leadflow.replay.{self.serving}.{self.projection.name}",
                **{"enable.partition.eof": True},
            )
            try:
                self._assign(consumer, conn, building, self._topics(consumer))
                switched = False
                while not stop.is_set():
                    self._catch_up(consumer, conn, building, stop)
                    if stop.is_set():
                        break
                    try:
                        building = self._switch(consumer, conn, building)
                        switched = True
                        break
                    except SwitchTimeoutError as exc:
                        self._log.warning("switch rolled back; catching up again", error=str(exc))
                        self._assign(consumer, conn, building, list(self._topic_names()))
            finally:
                consumer.close()
        seconds = time.monotonic() - started
        self._log.info(
            "rebuild switched" if switched else "rebuild interrupted; run again to resume",
            generation=building.number,
            records=self.written,
            seconds=round(seconds, 1),
        )
        return RebuildResult(building, self.written, seconds, resumed, switched)

    # -- the generation to build -------------------------------------------------------------

    def _building(self, conn: Connection) -> tuple[Generation, bool]:
        migrate(conn, self.serving)
        name = self.projection.name
        building = current(conn, self.serving, name, "building")
        if building is not None and self.restart:
            drop(conn, building)
            building = None
        if building is None:
            return create_building(conn, self.serving, name, self.from_time), False
        if self.from_time is not None and building.started_from != self.from_time:
            raise ConfigError(
                f"generation {building.number} of {name} is being built from "
                f"{building.started_from or 'the beginning'}; run without --from to resume "
                "it, or with --restart to start over"
            )
        self._log.info("resuming rebuild", generation=building.number)
        return building, True

    # -- reading ------------------------------------------------------------------------------

    def _topics(self, consumer: Consumer) -> list[str]:
        topics = consumer.list_topics(timeout=10).topics
        return sorted(t for t in topics if self.pattern.match(t))

    def _topic_names(self) -> set[str]:
        return {topic for topic, _ in self._positions}

    def _assign(
        self, consumer: Consumer, conn: Connection, building: Generation, topics: Iterable[str]
    ) -> None:
        """(Re)assign every partition of ``topics`` at the new generation's checkpoint, or at
        the start (``--from`` time or the beginning) where it has none."""
        topics = sorted(set(topics))
        metadata = consumer.list_topics(timeout=10).topics
        checkpoints = load_checkpoints(conn, self.projector, topics, building.schema)
        wanted = [
            (topic, partition)
            for topic in topics
            if topic in metadata
            for partition in sorted(metadata[topic].partitions)
        ]
        starts = self._starts(consumer, [tp for tp in wanted if tp not in checkpoints], building)
        self._positions = {tp: checkpoints.get(tp, starts.get(tp, 0)) for tp in wanted}
        self._at_end = set()
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in self._positions.items()])
        self.on_progress(self.written, self.written + self._remaining(consumer))

    def _starts(
        self, consumer: Consumer, partitions: list[TopicPart], building: Generation
    ) -> dict[TopicPart, int]:
        if not partitions:
            return {}
        if building.started_from is None:
            return self._list_offsets(partitions, "earliest")
        # No record at or after the time: start at the end.
        return offsets_at(self._admin(), partitions, int(building.started_from.timestamp() * 1000))

    def _list_offsets(self, partitions: list[TopicPart], at: OffsetQuery) -> dict[TopicPart, int]:
        """One request for all partitions (the kit's ListOffsets): a consumer's per-partition
        watermark query waits behind its fetches (tens of ms each) once it reads."""
        return list_offsets(self._admin(), partitions, at)

    def _remaining(self, consumer: Consumer) -> int:
        """Records between each partition's position and its head, as last fetched (the
        consumer's cached high watermark, else a listed end offset)."""
        unknown = [tp for tp in self._positions if tp not in self._heads]
        self._heads.update(self._list_offsets(unknown, "latest"))
        for tp in self._positions:
            _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high >= 0:
                self._heads[tp] = max(self._heads[tp], int(high))
        return sum(max(0, self._heads[tp] - pos) for tp, pos in self._positions.items())

    def _read(self, consumer: Consumer) -> list[Record]:
        """One fetch's records; partitions that report their end join ``_at_end``."""
        records = []
        ended: dict[TopicPart, int] = {}
        last: dict[TopicPart, int] = {}
        at_end = self._ender(ended)
        for msg in fetch(
            consumer, self.batch_size, _POLL_S, self._consume_errors, at_end, fill=True
        ):
            tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
            records.append(Record(tp[0], tp[1], offset, msg.value(), msg.key()))
            last[tp] = offset
            self._at_end.discard(tp)
        for tp, end in ended.items():
            # The end offset (past any transaction marker): where to resume. The triage
            # reports ends before the records: an end that came before a record of its
            # partition (offset at or past it) is no longer the end.
            self._positions[tp] = max(self._positions.get(tp, 0), end)
            if last.get(tp, -1) < end:
                self._at_end.add(tp)
        return records

    @staticmethod
    def _ender(ended: dict[TopicPart, int]) -> EofHook:
        def at_end(topic: str, partition: int, offset: int) -> None:
            ended[(topic, partition)] = max(ended.get((topic, partition), 0), offset)

        return at_end

    def _write(self, conn: Connection, building: Generation, records: list[Record]) -> None:
        batch = build_batch(self._codec, records)
        write_batch(conn, self.projector, batch, building, self.projection)
        for tp, offset in batch.next_offsets.items():
            self._positions[tp] = max(self._positions.get(tp, 0), offset)
        self.written += len(records)

    # -- catching up and switching --------------------------------------------------------------

    def _catch_up(
        self, consumer: Consumer, conn: Connection, building: Generation, stop: threading.Event
    ) -> None:
        """Read and write until every partition has reported its end (or ``stop``)."""
        total = self.written + self._remaining(consumer)
        measured = time.monotonic()
        while not stop.is_set():
            records = self._read(consumer)
            if records:
                self._write(conn, building, records)
            if time.monotonic() - measured > _WATERMARK_EVERY_S:
                total = self.written + self._remaining(consumer)
                measured = time.monotonic()
            self.on_progress(self.written, max(total, self.written))
            if not records and self._at_end >= set(self._positions):
                return

    def _switch(self, consumer: Consumer, conn: Connection, building: Generation) -> Generation:
        deadline = time.monotonic() + self.switch_timeout_s
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '30s'")
            active = lock_active(cur, self.serving, self.projection.name)
            # Flows applied since the rebuild began: their topics too, from the start.
            new_topics = set(self._topics(consumer)) - self._topic_names()
            if new_topics:
                known = dict(self._positions)
                self._assign(consumer, conn, building, self._topic_names() | new_topics)
                self._positions.update(known)
                consumer.assign(
                    [TopicPartition(t, p, off) for (t, p), off in self._positions.items()]
                )
            live = (
                load_checkpoints(conn, self.projector, sorted(self._topic_names()), active.schema)
                if active is not None
                else {}
            )
            while any(self._positions.get(tp, 0) < offset for tp, offset in live.items()):
                if time.monotonic() > deadline:
                    raise SwitchTimeoutError(
                        f"not caught up with the live projector within {self.switch_timeout_s:.0f}s"
                    )
                records = self._read(consumer)
                if records:
                    self._write(conn, building, records)
            write_checkpoints(cur, self.projector, dict(self._positions), building.schema)
            activated = switch(cur, building, active)
        self.on_progress(self.written, self.written)
        return activated
