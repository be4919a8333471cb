"""The shared input: N ``source.accepted`` hand-off events, as a filter step reads them.

Built with the engine's own ``stamp_events`` and codec, so every scenario reads
exactly the bytes a real source step would have written (Avro single-object
encoding, keyed by lead id, with the type and hand-off headers). About 70% of
the leads pass the bench filter, so both of its branches are exercised.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from engine import __version__
from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import new_lead_id
from engine.runtime.kafka.clients import new_producer
from engine.runtime.kafka.config import transactional_producer_config
from engine.settings import Settings
from engine.steps.base import EventDraft
from engine.topics import HANDOFF_HEADER, TYPE_HEADER
from schemas.codec import default_codec

# Mostly service-area states; the rest fail the filter's first rule.
STATES = ("TX", "CA", "FL", "AZ", "NV", "NM", "CO", "UT", "GA", "NC", "NY", "OH", "WA")
SERVICE_AREA = STATES[:10]

Headers = list[tuple[str, str | bytes | None]]


def snapshot(lead_id: str, submitted_ms: int, rng: random.Random) -> dict[str, Any]:
    """A lead's vars after the source step: typed fields with their validity flags."""
    n = rng.randrange(10**9)
    return {
        "lead.id": lead_id,
        "submission.timestamp": submitted_ms,
        "lead.first_name": "Ada",
        "lead.last_name": f"Bench{n}",
        "lead.email": f"ada.bench{n}@example.com",
        "lead.email.valid": True,
        "lead.email.domain": "example.com",
        "lead.phone_1": f"512555{n % 10000:04d}",
        "lead.phone_1.valid": True,
        "lead.state": rng.choice(STATES),
        "lead.postal_code": f"{78700 + n % 100:05d}",
        "lead.tcpa_consent": rng.random() > 0.05,
        "lead.trustedform_cert_url": f"https://cert.trustedform.com/{n:032x}",
        "source.id": "source",
        "source.cost": 2.5,
    }


# A lead id and its snapshot -> the snapshot as written (``bench.sealed_input``: sealed).
SnapshotTransform = Callable[[str, dict[str, Any]], dict[str, Any]]


def accepted_events(
    flow_id: str, count: int, seed: int = 7, transform: SnapshotTransform | None = None
) -> list[tuple[bytes, bytes, Headers]]:
    """(key, value, headers) of ``count`` encoded ``source.accepted`` hand-off events; the
    same leads for the same seed, whatever ``transform`` does to their snapshots."""
    rng = random.Random(seed)
    codec = default_codec()
    who = StepIdentity(flow_id, 1, "source", "Web form A", 0, "bench", __version__)
    base_ms = 1_764_000_000_000
    out = []
    for i in range(count):
        submitted = base_ms + i
        lead_id = new_lead_id(submitted)
        draft = EventDraft("source.accepted", "success", cost=2.5, entity_id="source")
        vars_ = snapshot(lead_id, submitted, rng)
        (event,) = stamp_events(
            [draft],
            who,
            lead_id,
            submitted,
            vars_ if transform is None else transform(lead_id, vars_),
            Timing(submitted, submitted + 1, 0),
        )
        headers: Headers = [(TYPE_HEADER, b"source.accepted"), (HANDOFF_HEADER, b"1")]
        out.append((lead_id.encode(), codec.encode(event), headers))
    return out


def fill(settings: Settings, topic: str, records: list[tuple[bytes, bytes, Headers]]) -> int:
    """Produce the records (idempotent producer, acks=all); returns the value bytes written."""
    return _write(new_producer(settings, **{"linger.ms": 50}), topic, records)


def _write(producer: Producer, topic: str, records: list[tuple[bytes, bytes, Headers]]) -> int:
    """Every record produced and flushed; the value bytes written."""
    size = 0
    for key, value, headers in records:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
        size += len(value)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not write the bench input to {topic}")
    return size


def staged(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes, Headers]], txn_id: str
) -> Producer:
    """The records written in one open transaction: ``commit_transaction`` on the returned
    producer shows them all at once to ``read_committed`` readers, as a backlog - a step's
    input at a peak - rather than at the pace one producer writes them."""
    # A full run's burst takes longer to write than a step's transaction may stay open.
    config = transactional_producer_config(settings, txn_id)
    producer = Producer({**config, "transaction.timeout.ms": 300_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    _write(producer, topic, records)
    return producer
