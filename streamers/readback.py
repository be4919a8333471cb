"""Read a destination back: list a prefix and decode every object into the events it holds.

What a consumer of the bucket (or an audit) does: per-event ``.json`` objects,
``.jsonl.gz`` batches and ``.avro`` container files are all decoded into the
same JSON event dicts the per-event objects hold; dead letters and verification
probes are skipped.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fastavro
import orjson

from engine.objects.contract import ObjectStore, directory
from schemas.codec import event_to_json_dict
from streamers import layout


def decode_object(key: str, body: bytes) -> list[dict[str, Any]]:
    """The events one object holds, as JSON dicts; ``ValueError`` for an unknown kind of key."""
    if key.endswith(".jsonl.gz"):
        lines = gzip.decompress(body).splitlines()
        return [orjson.loads(line) for line in lines if line]
    if key.endswith(".avro"):
        records = fastavro.reader(io.BytesIO(body))
        # Through JSON, so that Avro's datetimes read back exactly as the JSON objects do.
        return [
            orjson.loads(orjson.dumps(event_to_json_dict(r)))
            for r in records
            if isinstance(r, dict)
        ]
    if key.endswith(".json"):
        return [orjson.loads(body)]
    raise ValueError(f"{key} is not an event object")


def event_object_keys(store: ObjectStore, prefix: str) -> list[str]:
    """Every event object under ``prefix`` (normalised like the streamer's), dead letters and
    verification probes aside."""
    keys = store.list_keys(directory(prefix))
    return [
        key
        for key in keys
        if not layout.is_dead_letter_key(prefix, key)
        and not layout.is_verification_key(prefix, key)
    ]


def read_events(store: ObjectStore, prefix: str, *, threads: int = 16) -> Iterator[dict[str, Any]]:
    """Every event stored under ``prefix``, object by object in key order."""
    keys = event_object_keys(store, prefix)
    with ThreadPoolExecutor(threads) as pool:
        for key, body in zip(keys, pool.map(store.get, keys), strict=True):
            yield from decode_object(key, body)


def duplicate_ids(events: list[dict[str, Any]]) -> list[str]:
    """Event ids stored more than once (an exactly-once destination has none)."""
    return sorted(event_id for event_id, n in Counter(e["id"] for e in events).items() if n > 1)


def count_objects(store: ObjectStore, prefix: str, *, include_dead_letters: bool = False) -> int:
    """How many objects a destination holds under ``prefix`` (normalised like the streamer's)."""
    keys = store.list_keys(directory(prefix))
    if include_dead_letters:
        return len(keys)
    return sum(1 for key in keys if not layout.is_dead_letter_key(prefix, key))
