"""Events/s of the projector's batch path: ``python -m tests.projectors.bench_projector``.

Times, for N events of fresh leads (5 per lead) in batches of B, the two
halves of ``TimelineProjector.process_batch`` separately - decoding records
into rows (``build_batch``), and the Postgres transaction (``write_batch``:
binary COPY to the staging table, insert, leads upsert, checkpoints) - into a
fresh schema that is dropped afterwards. With ``--kafka`` it also times a
projector from start to the last row, consumer group join included.
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from engine.logs import configure_logging
from engine.runtime.kafka.config import admin_config, producer_config
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.generations import migrate
from projectors.projector import TimelineProjector
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events

CODEC = EventCodec()


def encoded_events(flow_id: str, events: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``events`` encoded events, 5 per lead."""
    out = []
    for i in range(events // 5):
        for event in make_lead_events(flow_id=flow_id, submitted_ms=1_764_000_000_000 + i):
            out.append((event["lead_id"].encode(), CODEC.encode(event)))
    return out


def bench_batches(settings: Settings, flow_id: str, events: int, batch_size: int) -> None:
    encoded = encoded_events(flow_id, events)
    records = [Record("bench", 0, i, value, key) for i, (key, value) in enumerate(encoded)]
    chunks = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    with connect(settings) as conn:
        migrate(conn, settings.db_schema)
        started = time.perf_counter()
        batches = [build_batch(CODEC, chunk) for chunk in chunks]
        built = time.perf_counter()
        for batch in batches:
            write_batch(conn, "bench", batch)
        written = time.perf_counter()
        query = "SELECT count(*) FROM events WHERE flow_id = %s"
        count = conn.execute(query, (flow_id,)).fetchone()
    assert count is not None and count[0] == len(records)
    n, decode_s, write_s = len(records), built - started, written - built
    print(
        f"{n} events, batches of {batch_size}: build_batch {n / decode_s:7.0f}/s"
        f"  write_batch {n / write_s:7.0f}/s  both {n / (decode_s + write_s):7.0f}/s"
    )


def bench_kafka(settings: Settings, flow_id: str, events: int) -> None:
    topic = f"leadflow.{flow_id}.events.source"
    admin = AdminClient(admin_config(settings))  # kept referenced until the topic exists
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    producer = Producer(producer_config(settings))
    for key, value in encoded_events(flow_id, events):
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0
    projector = TimelineProjector(settings, rf"^leadflow\.{flow_id}\.events\..+$", flow_id)
    stop = threading.Event()
    started = time.perf_counter()
    worker = threading.Thread(target=projector.run, args=(stop,))
    worker.start()
    while projector.stats.records < events:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    worker.join()
    rate = events / elapsed
    print(f"{events} events from Kafka, group join included: {elapsed:5.2f}s {rate:7.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2000])
    parser.add_argument("--kafka", action="store_true", help="also time a projector on Kafka")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    schema = f"bench{time.time_ns() % 10**10}"
    settings = Settings(db_schema=schema)
    try:
        for batch_size in args.batch_size:
            bench_batches(settings, f"{schema}b{batch_size}", args.events, batch_size)
        if args.kafka:
            bench_kafka(settings, f"{schema}k", args.events)
    finally:
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
