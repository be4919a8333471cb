"""Publishing intake records from asyncio code: one producer per process, awaited per record.

librdkafka batches and retries on its own thread; each record's delivery
report resolves an asyncio future, so a request answers only once its lead
is durably on the intake topic (``acks=all``, idempotent producer).
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, KafkaException, Message

from engine.errors import LeadflowError
from engine.runtime.kafka.clients import new_producer
from engine.settings import Settings


class PublishError(LeadflowError):
    """Kafka did not take the record; the lead does not exist."""


class IntakePublisher:
    def __init__(self, settings: Settings) -> None:
        self._producer = new_producer(settings, **{"linger.ms": 2})
        self._stop = threading.Event()
        # Delivery reports are served by poll(); a thread keeps calling it.
        self._poller = threading.Thread(target=self._poll, name="intake-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            def settle() -> None:
                if done.done():
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(PublishError(f"intake record not published: {err.str()}"))

            loop.call_soon_threadsafe(settle)

        while True:
            try:
                self._producer.produce(
                    topic, value, key.encode(), headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:  # the local queue is full: give librdkafka a moment
                await asyncio.sleep(0.01)
            except KafkaException as exc:
                raise PublishError(f"intake record not published: {exc}") from exc
        await done

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        self._poller.join(2)
