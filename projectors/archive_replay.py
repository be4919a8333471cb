"""Rebuild a projection from the streamer's archive, then from the topics:
``leadflow replay NAME --from-archive s3://bucket/prefix``.

For the period Kafka no longer holds. The rebuild fills a new building generation
(``projectors.generations``) from the archived objects, each event with the topic,
partition and offset it had (``engine.objects.positions``), so its rows are the rows a
rebuild from the topics writes. Those writes also move the generation's checkpoints to
the offset after each partition's last archived event: the hand-over. The topic rebuild
(``projectors.replay.Rebuild``) then resumes that generation from those checkpoints and
switches as usual: each offset is read once, from the archive or from the topic.

Before handing over, each partition's hand-over offset is checked against the oldest
offset the topic still holds: an archive that ends before it leaves a gap, and the
rebuild stops (the generation is dropped, nothing is switched). So does bad input - an
object truncated, not gzip, or with a line that does not parse - unless ``skip_bad``:
then it is reported by key and line and skipped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from engine.errors import ConfigError, LeadflowError
from engine.objects.contract import ObjectStore
from engine.objects.positions import ArchiveKey
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.offsets import list_offsets
from engine.settings import Settings
from projectors.archive import ArchivedEvent, ArchiveReader, BadInput, archive_objects
from projectors.batch import Batch, Record, UnstorableEventError, event_row
from projectors.generations import Generation, create_building, current, drop, migrate
from projectors.projections import projection
from projectors.replay import ProgressCallback, Rebuild, RebuildResult, live_projector_name
from projectors.store import Connection, connect
from projectors.writing import load_checkpoints, write_batch

log = structlog.get_logger(__name__)

TopicPart = tuple[str, int]
# (objects read, objects in all, events written)
ArchiveProgress = Callable[[int, int, int], None]


class ArchiveReplayError(LeadflowError):
    """The archive cannot be replayed as it is; nothing was switched."""


class BadArchiveError(ArchiveReplayError):
    """Objects or lines that could not be read, and ``--skip-bad`` was not given."""

    def __init__(self, bad: list[BadInput]) -> None:
        self.bad = bad
        shown = "\n  ".join(str(b) for b in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        super().__init__(
            f"{len(bad)} bad archive input(s); nothing switched (--skip-bad skips them):"
            f"\n  {shown}{more}"
        )


class ArchiveGapError(ArchiveReplayError):
    """The archive ends before the topics begin: the events between are in neither."""


@dataclass(frozen=True, slots=True)
class ArchiveReplayResult:
    archive_events: int
    archive_objects: int
    bad: list[BadInput]
    seconds: float  # reading the archive
    topics: RebuildResult  # the hand-over to the topics and the switch
    hand_over: dict[TopicPart, int] = field(default_factory=dict)


def gaps(
    hand_over: dict[TopicPart, int], earliest: dict[TopicPart, int], *, from_start: bool
) -> dict[TopicPart, tuple[int, int]]:
    """Partitions whose archived events end before the oldest offset their topic holds, with
    both offsets. A partition the archive does not hold continues on its topic at offset 0
    when the rebuild is ``from_start``; from a time, it starts at that time as a topic
    rebuild does, and is not checked."""
    return {
        tp: (hand_over.get(tp, 0), oldest)
        for tp, oldest in sorted(earliest.items())
        if (tp in hand_over or from_start) and hand_over.get(tp, 0) < oldest
    }


class ArchiveRebuild:
    """One rebuild of projection ``name`` from an archive, then the topics; ``run`` does it."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        store: ObjectStore,
        prefix: str,
        *,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
        skip_bad: bool = False,
        batch_size: int = 2000,
        on_archive: ArchiveProgress | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.projection = projection(name)
        self.store = store
        self.prefix = prefix
        self.from_time = from_time
        self.to_time = to_time
        self.skip_bad = skip_bad
        self.batch_size = batch_size
        self.on_archive = on_archive or (lambda done, total, events: None)
        self.on_progress = on_progress
        self.projector = live_projector_name(settings, name)
        self.pattern = re.compile(settings.projector_pattern)
        self.bad: list[BadInput] = []
        self._log = log.bind(projection=name, archive=store.name)

    def run(self, stop: threading.Event) -> ArchiveReplayResult:
        started = time.monotonic()
        with connect(
            self.settings, application_name=f"leadflow-archive-replay-{self.projection.name}"
        ) as conn:
            building = self._new_building(conn)
            try:
                objects, events = self._replay_archive(conn, building, stop)
                hand_over = load_checkpoints(
                    conn,
                    self.projector,
                    sorted({t for t, _ in self._partitions()}),
                    building.schema,
                )
                if stop.is_set():
                    raise ArchiveReplayError("stopped while reading the archive")
                if self.bad and not self.skip_bad:
                    raise BadArchiveError(self.bad)
                self._check_no_gap(hand_over)
            except BaseException:
                # An archive replay does not resume: a half-read archive must never be
                # taken for a complete one by a later topic rebuild.
                drop(conn, building)
                self._log.warning("archive replay stopped; generation dropped",
                                  generation=building.number)  # fmt: skip
                raise
        seconds = time.monotonic() - started
        self._log.info("archive read; handing over to the topics", objects=objects,
                       events=events, bad=len(self.bad), seconds=round(seconds, 1),
                       partitions=len(hand_over))  # fmt: skip
        topics = Rebuild(
            self.settings,
            self.projection.name,
            from_time=self.from_time,
            batch_size=self.batch_size,
            on_progress=self.on_progress,
        ).run(stop)
        return ArchiveReplayResult(events, objects, self.bad, seconds, topics, hand_over)

    def _new_building(self, conn: Connection) -> Generation:
        serving = self.settings.db_schema
        migrate(conn, serving)
        building = current(conn, serving, self.projection.name, "building")
        if building is not None:
            raise ConfigError(
                f"generation {building.number} of {self.projection.name} is being built; "
                f"finish it (leadflow replay {self.projection.name}) or drop it "
                f"(leadflow projections drop {self.projection.name} {building.number}) first"
            )
        return create_building(conn, serving, self.projection.name, self.from_time)

    # -- the archive ----------------------------------------------------------------------

    def _report(self, bad: BadInput) -> None:
        self.bad.append(bad)
        self._log.warning("bad archive input", key=bad.key, line=bad.line, error=bad.error,
                          skipped=self.skip_bad)  # fmt: skip

    def _replay_archive(
        self, conn: Connection, building: Generation, stop: threading.Event
    ) -> tuple[int, int]:
        objects = archive_objects(self.store, self.prefix, self.to_time)
        self._log.info("archive listed", objects=len(objects))
        done = 0
        written = 0

        def object_read(_: ArchiveKey) -> None:
            nonlocal done
            done += 1

        batch = Batch()
        for archived in ArchiveReader(self.store, self._report).read(objects, object_read):
            if stop.is_set():
                break
            if self.from_time is not None and archived.event["timestamp"] < self.from_time:
                continue
            if not self.pattern.match(archived.topic):
                # What a topic rebuild would not read either (another flow's events).
                continue
            self._add(batch, archived)
            if len(batch.events) >= self.batch_size:
                written += self._write(conn, building, batch)
                batch = Batch()
                self.on_archive(done, len(objects), written)
        if batch.events and not stop.is_set():
            written += self._write(conn, building, batch)
        self.on_archive(done, len(objects), written)
        return done, written

    def _add(self, batch: Batch, archived: ArchivedEvent) -> None:
        record = Record(archived.topic, archived.partition, archived.offset, None)
        try:
            batch.events.append(event_row(archived.event, record))
        except (UnstorableEventError, KeyError, TypeError, ValueError) as exc:
            self._report(
                BadInput(f"{archived.topic}+{archived.partition}+{archived.offset}", None,
                         f"{type(exc).__name__}: {exc}")
            )  # fmt: skip
            return
        tp = (archived.topic, archived.partition)
        batch.next_offsets[tp] = max(batch.next_offsets.get(tp, 0), archived.offset + 1)

    def _write(self, conn: Connection, building: Generation, batch: Batch) -> int:
        write_batch(conn, self.projector, batch, building, self.projection)
        return len(batch.events)

    # -- the hand-over --------------------------------------------------------------------

    def _partitions(self) -> list[TopicPart]:
        pattern = re.compile(self.settings.projector_pattern)
        topics = new_admin(self.settings).list_topics(timeout=10).topics
        return sorted(
            (name, p)
            for name, meta in topics.items()
            if pattern.match(name)
            for p in meta.partitions
        )

    def _check_no_gap(self, hand_over: dict[TopicPart, int]) -> None:
        """Every partition continues on its topic at or after the oldest offset it holds."""
        earliest = list_offsets(new_admin(self.settings), self._partitions(), "earliest")
        found = gaps(hand_over, earliest, from_start=self.from_time is None)
        if found:
            shown = ", ".join(
                f"{t}[{p}]: archive ends before {a}, topic starts at {o}"
                for (t, p), (a, o) in list(found.items())[:10]
            )
            raise ArchiveGapError(f"{len(found)} partition(s) have a gap: {shown}")
