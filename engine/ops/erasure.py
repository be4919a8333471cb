"""Forgetting a person (crypto-shredding), both phases.

Phase one (``erase_now``), one Postgres transaction: the leads' data keys are deleted and
tombstones written. At its commit every copy of their sealed values - topics, Postgres,
objects, anything a backup kept - stops opening, at once. It comes first so that no
crash can leave a lead recorded as erased while still readable.

Phase two (``finish_erasures``) overwrites what can be overwritten: Postgres rows
(``erasure_rows``), per-event objects and export files (``erasure_objects``), then records
``lead.erased`` on the flow's feedback events topic (read by the projectors and the
streamers like every other event). Each part is idempotent and the tombstone's
``finished_at`` is set last, so ``leadflow erase`` run again finishes whatever a crash
left, and so does any later erase (it finishes every unfinished tombstone).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message

from engine import __version__
from engine.events import EVENT_SCHEMA_VERSION, RETENTION_MS, LeadEvent
from engine.flows import Flow
from engine.ids import event_id, id_timestamp_ms
from engine.ops.erasure_objects import erase_objects, remove_exports
from engine.ops.erasure_rows import ERASED_EVENT, flows_of_leads, scrub_rows
from engine.runtime.kafka.clients import new_producer
from engine.settings import Settings
from engine.state.keys import erase_leads, finish_erasure, known_leads, unfinished_erasures
from engine.state.postgres import connect
from engine.topics import events_topic
from schemas.codec import EventCodec

# The erasure event's position in a lead's timeline: after every step (at most 200) and
# before feedback (255), so ``lead.erased`` is the lead's last event but for feedback.
ERASURE_STEP_INDEX = 254
ERASURE_STEP_ID = "erasure"
_INT32 = 2**31 - 1


class ErasureIncompleteError(Exception):
    """Phase two could not finish for some leads (their keys are gone all the same)."""


@dataclass
class Erased:
    """What erasing one lead did, for the operator (no personal data)."""

    lead_id: str
    flow_id: str | None
    rows: int = 0
    objects_deleted: int = 0
    batched: list[str] = field(default_factory=list)
    exports_removed: int = 0
    event_topic: str | None = None
    problem: str | None = None  # why phase two did not finish


def erased_event(lead_id: str, flow: Flow, erased_ms: int) -> LeadEvent:
    """``lead.erased`` as a lead event: schema fields only, no personal data. Its id is a
    function of the lead alone, so running the erasure again writes the same event."""
    submitted = id_timestamp_ms(lead_id)
    return {
        "id": event_id(lead_id, submitted, ERASURE_STEP_INDEX, 0),
        "type": ERASED_EVENT,
        "outcome": "success",
        "reason": "erased on request: the lead's personal fields can no longer be read",
        "lead_id": lead_id,
        "flow_id": flow.id,
        "flow_version": flow.version,
        "step_id": ERASURE_STEP_ID,
        "step_name": "Erasure",
        "entity_id": None,
        "timestamp": erased_ms,
        "start_timestamp": erased_ms,
        "end_timestamp": erased_ms,
        "ms": 0,
        "wait_ms": 0,
        "overhead_ms": 0,
        "lag_ms": 0,
        "total_ms": min(_INT32, max(0, erased_ms - submitted)),
        "step_count": 0,
        "vars": {},
        "appended": {},
        "request": None,
        "response": None,
        "cost": None,
        "revenue": None,
        "cap_reached": None,
        "ping_limit_reached": None,
        "module_id": None,
        "package_version": None,
        "acceptance_criteria": None,
        "attempt": 1,
        "retry_status": None,
        "circuit_breaker_state": None,
        "key": None,
        "expires_at": erased_ms + RETENTION_MS,
        "version": EVENT_SCHEMA_VERSION,
        "handler_version": __version__,
        "host": socket.gethostname(),
        "firehose": None,
        "flow_ping_limits": None,
        "source_ping_limits": None,
        "client_ip": None,
        "source_config_version": None,
        "rule_set": None,
        "rules_evaluated": None,
        "rule_results": None,
        "failed_values": None,
        "would_have_destination": None,
        "retry_attempts": None,
        "timeout_ms": None,
        "timed_out": None,
        "metrics_changed": None,
    }


def erase_now(settings: Settings, lead_ids: list[str]) -> tuple[list[str], int]:
    """Phase one for the leads the engine knows (a key, an index row, a tombstone or a
    timeline row); returns those leads and how many keys were deleted now. Unknown ids
    are left alone (nothing to erase, and no tombstone for a lead that never was)."""
    with connect(settings) as conn:
        flows = flows_of_leads(conn, settings.db_schema, lead_ids)
        with conn.cursor() as cur:
            known = sorted(set(known_leads(cur, lead_ids)) | set(flows))
        if not known:
            return [], 0
        with conn.transaction(), conn.cursor() as cur:
            deleted = erase_leads(cur, known, flows)
    return known, deleted


def _publish(settings: Settings, events: list[LeadEvent]) -> None:
    if not events:
        return
    codec = EventCodec()
    producer = new_producer(settings)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    for event in events:
        producer.produce(
            events_topic(event["flow_id"], "feedback"),
            codec.encode(event),
            event["lead_id"].encode(),
            on_delivery=on_delivery,
        )
    if producer.flush(30) or failures:
        raise ErasureIncompleteError(f"lead.erased not written: {failures or 'timed out'}")


def finish_erasures(settings: Settings, flows: Mapping[str, Flow]) -> list[Erased]:
    """Phase two for every tombstone not finished yet; a lead whose flow is not in ``flows``
    keeps its tombstone unfinished (its objects cannot be found) and says so."""
    done: list[Erased] = []
    with connect(settings) as conn:
        with conn.cursor() as cur:
            pending = unfinished_erasures(cur)
        for lead_id, flow_id, erased_ms in pending:
            result = Erased(lead_id, flow_id)
            done.append(result)
            result.rows = scrub_rows(conn, settings.db_schema, lead_id)
            result.exports_removed = remove_exports(conn, settings, lead_id)
            flow = flows.get(flow_id) if flow_id is not None else None
            if flow is None:
                result.problem = (
                    f"flow {flow_id or '(unknown)'} not found: its objects were not searched"
                    " and lead.erased not written (run again with --flow-file)"
                )
                continue
            objects = erase_objects(settings, flow, lead_id)
            result.objects_deleted, result.batched = objects.deleted, objects.batched
            _publish(settings, [erased_event(lead_id, flow, erased_ms)])
            result.event_topic = events_topic(flow.id, "feedback")
            with conn.transaction(), conn.cursor() as cur:
                finish_erasure(cur, lead_id)
    return done
