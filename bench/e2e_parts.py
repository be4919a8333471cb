"""The e2e scenario's moving parts: lead publisher, completion observer, RSS sampler.

The observer only reads headers and sizes while leads flow (decoding there
would slow the observer, not the system, and inflate the latencies); the
events are kept as bytes and decoded after the phase for ``overhead_ms``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, TopicPartition

from engine.ids import new_lead_id
from engine.runtime.handlers import header_map
from engine.runtime.kafka.clients import new_consumer, new_producer
from engine.runtime.kafka.fetch import ConsumeErrors
from engine.settings import Settings
from engine.topics import TYPE_HEADER, intake_topic


def fake_lead(i: int) -> dict[str, Any]:
    """A lead the e2e flow accepts most of the time (the buyer's mix still refuses some)."""
    states = ("TX", "CA", "FL", "AZ", "NY")
    return {
        "first_name": "Ada",
        "last_name": f"Bench{i}",
        "email": f"ada.bench{i}@example.com",
        "phone_1": f"512555{i % 10000:04d}",
        "state": states[i % len(states)],
        "postal_code": "78701",
        "tcpa_consent": "yes",
    }


class Publisher:
    """Publishes leads to the intake as ``publish_leads`` does, remembering when each was sent."""

    def __init__(self, settings: Settings, flow_id: str) -> None:
        self.producer = new_producer(settings, **{"linger.ms": 1})
        self.topic = intake_topic(flow_id)
        self.sent_at: dict[bytes, float] = {}
        self.count = 0

    def publish(self, n: int) -> None:
        for _ in range(n):
            key = new_lead_id().encode()
            value = orjson.dumps(fake_lead(self.count))
            self.count += 1
            while True:
                try:
                    self.producer.produce(
                        self.topic, value, key, headers=[("content-type", b"application/json")]
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.sent_at[key] = time.monotonic()
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)


@dataclass
class Observed:
    completed: dict[bytes, float] = field(default_factory=dict)
    bytes_seen: int = 0
    values: list[bytes] = field(default_factory=list)


class Observer(threading.Thread):
    """Reads every events topic of the flow from its end, read_committed: what a consumer sees."""

    def __init__(self, settings: Settings, topics: Iterable[str], partitions: int) -> None:
        super().__init__(name="observer", daemon=True)
        self.consumer = new_consumer(settings, "bench-observer-unused")
        self.errors = ConsumeErrors("bench observer")
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_END) for t in topics for p in range(partitions)]
        )
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.keep_values = False
        self.seen = Observed()

    def reset(self, keep_values: bool = False) -> Observed:
        with self.lock:
            previous, self.seen, self.keep_values = self.seen, Observed(), keep_values
        return previous

    def run(self) -> None:
        while not self.stop.is_set():
            # consume(n, timeout), not the kit's fetch: the observer's clock has always
            # read completions this way, so e2e latencies stay comparable across runs.
            messages = self.errors.triage(self.consumer.consume(1000, timeout=0.05))
            now = time.monotonic()
            with self.lock:
                for msg in messages:
                    value = msg.value() or b""
                    self.seen.bytes_seen += len(value)
                    if self.keep_values:
                        self.seen.values.append(value)
                    if header_map(msg).get(TYPE_HEADER) == b"flow.completed":
                        self.seen.completed[msg.key() or b""] = now
        self.consumer.close()

    def completed(self) -> int:
        with self.lock:
            return len(self.seen.completed)


def wait_for(observer: Observer, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while observer.completed() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{observer.completed()}/{count} leads completed in {timeout_s}s")
        time.sleep(0.02)


class RssSampler(threading.Thread):
    """Peak resident set size of each worker process (psutil if there, else /proc)."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.5) -> None:
        super().__init__(name="rss", daemon=True)
        self.pids, self.every_s = pids, every_s
        self.peak_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            for role, pid in self.pids.items():
                self.peak_mb[role] = max(self.peak_mb[role], rss_mb(pid))


def rss_mb(pid: int) -> float:
    """Current RSS of ``pid`` in MiB; 0 once it is gone."""
    try:
        import psutil  # in the bench extra only: the dev venv's tests import this module too

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except ImportError:
        pass
    except Exception:  # the process exited between samples
        return 0.0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
