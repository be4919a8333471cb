"""replay: rebuilding the timeline projection from the topics (``leadflow replay timeline``),
and from the streamer's archive (``leadflow replay timeline --from-archive s3://...``).

``projectors.replay.Rebuild`` over the shared input topic into a fresh serving
schema per round: read, decode, write each batch with its checkpoints, then the
switch. Rate = records written / the rebuild's own seconds (group join and the
switch included, as an operator waiting for it sees them).

The archive side: the same records archived once per run as the streamer writes them
(``streamers.batched``, ``jsonl.gz`` objects on the local S3), then
``projectors.archive_replay.ArchiveRebuild`` into another fresh schema: list, download,
inflate, parse, write, then hand over to the topic (nothing left to read there) and
switch. Rate = events written from the archive / its seconds, switch included.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from engine.destinations import BatchSettings, Destination
from engine.logs import configure_logging
from engine.objects.contract import ObjectStore, directory
from engine.objects.destination import open_store
from engine.runtime.kafka.clients import new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.settings import Settings
from projectors.archive_replay import ArchiveRebuild
from projectors.replay import Rebuild
from schemas.codec import default_codec
from streamers.batched import BatchedSink

ARCHIVE_BATCH = BatchSettings(max_records=10_000, max_seconds=3600)


def archive_prefix(run_id: str) -> str:
    return f"bench/{run_id}/archive"


def run_round(params: dict[str, Any]) -> dict[str, float]:
    configure_logging("json", "WARNING")
    pattern = rf"^{re.escape(params['input_topic'])}$"
    settings = Settings(
        db_schema=f"b{params['run_id']}r{params['round']}", projector_pattern=pattern
    )
    result = Rebuild(settings, "timeline").run(threading.Event())
    if not result.switched or result.records < params["events"]:
        raise RuntimeError(f"rebuild wrote {result.records} records, switched={result.switched}")
    figures = {"events_s": result.records / result.seconds, "seconds": result.seconds}
    store = open_store(Destination(kind="s3", bucket=settings.s3_bucket), settings, threads=8)
    try:
        prefix = archive_prefix(params["run_id"])
        if not store.list_keys(directory(prefix)):
            _archive(settings, params["input_topic"], params["events"], store, prefix)
        archived = settings.model_copy(update={"db_schema": f"{settings.db_schema}a"})
        rebuilt = ArchiveRebuild(archived, "timeline", store, prefix).run(threading.Event())
    finally:
        store.close()
    seconds = rebuilt.seconds + rebuilt.topics.seconds
    if not rebuilt.topics.switched or rebuilt.archive_events < params["events"]:
        raise RuntimeError(f"archive rebuild wrote {rebuilt.archive_events} events")
    figures.update(archive_events_s=rebuilt.archive_events / seconds, archive_seconds=seconds)
    return figures


def _archive(settings: Settings, topic: str, events: int, store: ObjectStore, prefix: str) -> None:
    """The input topic archived as the streamer archives it (its own writer), untimed."""
    sink = BatchedSink(
        default_codec(), prefix, "bench", "jsonl.gz", ARCHIVE_BATCH, lambda *_: None, lambda: 0.0
    )
    consumer = new_consumer(
        settings, f"bench.archive.{prefix}", **{"auto.offset.reset": "earliest"}
    )
    errors = ConsumeErrors("bench archive")
    try:
        consumer.subscribe([topic])
        seen = 0
        while seen < events:
            records = list(fetch(consumer, 5000, 1.0, errors, None))
            sink.add(records)
            seen += len(records)
    finally:
        consumer.close()
    while (work := sink.take_round(1e12, True)) is not None:
        for job in work.jobs:
            job(store)
        for done in work.done:
            done()
    sink.close()
