"""Events/s the streamer sustains per local store and format:
``python -m tests.streamers.bench_streamer --events 20000 --formats json jsonl.gz avro``.

Produces N events of a fresh flow, then times one destination's streamer from
start to all offsets committed (consumer group join included).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Literal

from engine.destinations import BatchSettings, Destination, Format
from engine.logs import configure_logging
from engine.objects.destination import open_store
from engine.settings import Settings
from streamers.readback import read_events
from streamers.streamer import Streamer
from tests.factories import make_flow
from tests.streamers.support import all_committed, create_topics, make_events, produce_events


def bench(
    settings: Settings,
    kind: Literal["s3", "azure_blob"],
    events: int,
    threads: int,
    fmt: Format = "json",
) -> float:
    flow_id = f"bench{time.time_ns() % 10**10}"
    bucket = settings.s3_bucket if kind == "s3" else settings.azure_container
    destination = Destination(
        kind=kind,
        bucket=bucket,
        prefix=f"bench/{flow_id}",
        format=fmt,
        # Objects of 1,000 events; the last ones of each partition close after 1 s idle.
        batch=BatchSettings(max_records=1000, max_seconds=1),
    )
    flow = make_flow(flow_id, "http://127.0.0.1:9/unused").model_copy(
        update={"destinations": [destination]}
    )
    topics = create_topics(settings, flow)
    produce_events(settings, flow.id, make_events(flow_id, leads=events // 5))
    streamer = Streamer(settings, flow, destination, threads=threads)
    stop = threading.Event()
    started = time.monotonic()
    worker = threading.Thread(target=streamer.run, args=(stop,))
    worker.start()
    while not all_committed(settings, flow, topics):
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    stop.set()
    worker.join()
    store = open_store(destination, settings)
    assert sum(1 for _ in read_events(store, destination.prefix)) == events
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--threads", type=int, nargs="+", default=[16])
    parser.add_argument(
        "--formats", nargs="+", choices=["json", "jsonl.gz", "avro"], default=["json"]
    )
    parser.add_argument(
        "--kinds", nargs="+", choices=["s3", "azure_blob"], default=["s3", "azure_blob"]
    )
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    settings = Settings()
    for kind in args.kinds:
        for fmt in args.formats:
            for threads in args.threads:
                elapsed = bench(settings, kind, args.events, threads, fmt)
                rate = args.events / elapsed
                print(
                    f"{kind:10} {fmt:8} threads={threads:3} {args.events} events"
                    f" {elapsed:5.2f}s {rate:6.0f} events/s"
                )


if __name__ == "__main__":
    main()
