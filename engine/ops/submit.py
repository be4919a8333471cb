"""Publish leads to a flow's intake topic, as a high-volume producer would."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from engine.errors import LeadflowError
from engine.ids import new_lead_id
from engine.runtime.kafka.clients import new_producer
from engine.runtime.sealer import LeadSealer
from engine.settings import Settings
from engine.topics import intake_topic


class SubmitError(LeadflowError):
    """Some leads could not be published."""


def publish_leads(
    settings: Settings,
    flow_id: str,
    leads: Iterable[dict[str, Any] | str | bytes],
    sealer: LeadSealer | None = None,
) -> list[str]:
    """Publishes each lead keyed by a new lead id and returns the ids, in order.

    The id is assigned here, at the edge, so the producer knows it before any
    step runs (to look the lead up or wait for its outcome). Raw text or bytes
    are sent as they are: the source step turns them into rejections.
    ``sealer`` (a flow that seals): each lead's sensitive fields are sealed first.
    """
    producer = new_producer(settings)
    topic = intake_topic(flow_id)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")

    ids = []
    for lead in leads:
        lead_id = new_lead_id()
        value = (
            lead
            if isinstance(lead, bytes)
            else (lead.encode() if isinstance(lead, str) else orjson.dumps(lead))
        )
        content_type = "application/json"
        if sealer is not None:
            value, content_type = sealer.seal_body(lead_id, value, content_type)
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    lead_id.encode(),
                    on_delivery=on_delivery,
                    headers=[("content-type", content_type.encode())],
                )
                break
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.1)
        producer.poll(0)
        ids.append(lead_id)
    remaining = producer.flush(30)
    if remaining or failures:
        raise SubmitError(f"{len(failures) + remaining} leads not published: {failures[:3]}")
    return ids
