"""passthrough: the ceiling for a step - consume the input, produce the same bytes, exactly once.

The engine's own consumer and transactional producer configs and commit
interval, and its transaction shape (offsets sent with the outputs, commit every
``commit_interval_ms``), with no decoding and no Python work per record beyond
the ``produce`` call.

It is so much faster than any step that one pass over the input is over in a
blink; it reads the input ``passes`` times (seeking back to the start after
each full pass) so that its figure spans a measurable time.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.clock import RateClock
from engine.runtime.kafka.config import consumer_config, transactional_producer_config
from engine.settings import Settings


def run_round(params: dict[str, Any]) -> dict[str, float]:
    settings = Settings(commit_interval_ms=params["commit_interval_ms"])
    group = f"bench.{params['run_id']}.passthrough.r{params['round']}"
    # Bare confluent-kafka clients, on purpose (not the Kafka kit's): this is the ceiling
    # a step is measured against, with the engine's configs and nothing of its code.
    consumer = Consumer(consumer_config(settings, group))
    producer = Producer(transactional_producer_config(settings, group))
    out, interval = params["output_topic"], settings.commit_interval_ms / 1000
    events, passes = params["events"], params.get("passes", 1)
    clock = RateClock(events * passes)
    size = 0
    producer.init_transactions()
    consumer.subscribe([params["input_topic"]])
    pending: dict[tuple[str, int], int] = {}
    in_txn, started = False, 0.0
    while True:
        for msg in consumer.consume(settings.batch_size, timeout=0.1):
            if msg.error() is not None:
                continue
            if not in_txn:
                producer.begin_transaction()
                in_txn, started = True, time.monotonic()
            value = msg.value()
            producer.produce(out, value, msg.key(), headers=msg.headers())
            size += len(value or b"")
            pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            if not clock.tick() and clock.count % events == 0:
                for tp in consumer.assignment():  # a full pass: read the input again
                    consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        if in_txn and (clock.done or time.monotonic() - started >= interval):
            offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
            in_txn = False
            pending.clear()
        if clock.done and not in_txn:
            break
    consumer.close()
    clock.finish()
    rate = clock.rate()
    return {"events_s": rate, "mb_s": rate * size / max(clock.count, 1) / 2**20}
