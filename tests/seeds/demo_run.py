"""One run of the demo flow that the seed walks read (``tests/seeds/test_seed_00[0-3]*.py``;
seed 004's walk applies the same flow, ``demo_flow``, in a lifecycle of its own).

``flows/demo.yaml`` as ``make demo`` runs it - its steps (paid phone check retried once,
service-area filter, two buyers, the first with retries), its sealed personal fields, the
demo buyer with its mix of answers (``engine.demo.buyer``), the demo's fake leads
(``engine.intake.fake``, a fixed seed, malformed ones included) and buyer feedback - under
the run's own id and Postgres schema. Two things are changed, each because a seed names
what only they make: the source's HTTP intake with ping limits is added (the demo
publishes to the intake topic; ``client_ip`` and the ping-limit fields belong to leads
posted over HTTP), and the streaming destinations of seed 003 (each with its own
credentials, one per layout, one disabled) replace the demo's two.

A small run of fake leads may miss a rare outcome (1 % of them hit the service outage), so
one lead per outcome rides along, marked the way the demo buyer and its phone service read
(``CASES``; ``DUPLICATE``, sent once the first is in). The run is made once per session:
the walks share it (``xdist_group``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from engine.demo.buyer import BuyerServer, decide
from engine.destinations import AzureCredentials, Destination, S3Credentials, SecretRef
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_leads
from engine.objects.destination import open_store
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import build_feedback_loop, publish_feedback
from engine.runtime.sealer import LeadSealer
from engine.runtime.step_worker import prepare_topics
from engine.sealing import new_master_key_text
from engine.settings import Settings
from engine.state.postgres import migrate_state
from streamers.readback import event_object_keys
from streamers.streamer import run_streamers
from tests.engine.runtime.test_event_fields import post_over_http
from tests.kafka_helpers import events_by_lead, read_events, run_steps, wait_for_completion
from tests.waiting import wait_until

Event = dict[str, Any]

DEMO_FLOW = Path(__file__).parents[2] / "flows" / "demo.yaml"
FAKE_LEADS = 40
FAKE_SEED = 2026
GOOD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone_1": "(512) 555-0123",
    "state": "TX",
    "postal_code": "78701",
    "tcpa_consent": True,
}
# One lead per outcome, by the markers the demo buyer and phone service read.
CASES: dict[str, dict[str, Any]] = {
    "delivered": {**GOOD, "email": "ada+lag@example.com"},  # accepted after 300 ms
    "converted": {**GOOD, "email": "grace+lag@example.com"},  # delivered, then converts
    "returned": {**GOOD, "email": "alan+lag@example.com"},  # delivered, then returned
    "halted": {**GOOD, "email": "wy@example.com", "state": "WY"},  # filter.failed
    "rejected": {"first_name": "NoEmail"},  # source.rejected
    "refused": {**GOOD, "email": "c+reject@example.com"},  # recipient.failed
    "buyer_error": {**GOOD, "email": "d+error@example.com"},  # recipient.error, retried
    "no_data": {**GOOD, "email": "e+unknown@example.com"},  # enhancement.failure
    "service_down": {**GOOD, "email": "f+down@example.com"},  # enhancement.error, retried
    "service_hung": {**GOOD, "email": "g+hang@example.com"},  # the phone check times out
    "retried": {**GOOD, "email": "i+flaky@example.com"},  # buyer 503, retried, delivered
}
# The "delivered" lead again (same email and phone), once that one was accepted: of two
# leads that match, only one submitted after the other was admitted is a duplicate.
DUPLICATE = CASES["delivered"]
# The destinations of seed 003's checks, and the env variables holding their secrets.
KEY_ID_ENV, SECRET_ENV, AZURE_ENV = "SEEDS_S3_KEY_ID", "SEEDS_S3_SECRET", "SEEDS_AZURE_CONN"
INTAKE_KEY_ENV = "SEEDS_INTAKE_KEY"


class RunDeliveries:
    """The feedback worker's lookup (``engine.runtime.handlers.feedback.Deliveries``) over
    the run's events as read back from the broker, instead of the timeline projection."""

    def __init__(self, timelines: dict[str, list[Event]]) -> None:
        self.timelines = timelines

    def find(self, event_id: str) -> tuple[Event | None, list[Event]]:
        for timeline in self.timelines.values():
            for event in timeline:
                if event["id"] == event_id:
                    return event, timeline
        return None, []

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class DemoRun:
    settings: Settings  # the run's own schema; the stores' default credentials are wrong
    flow: Flow
    ids: dict[str, str]  # each case's lead id (and "over_http", "pinged")
    fake_ids: list[str]  # the demo's fake leads
    events: list[Event]  # every event of the run, feedback included, as a reader decodes it
    feedback: list[tuple[str, str]]  # (lead id, "conversion" or "return") as the buyers sent

    @property
    def timelines(self) -> dict[str, list[Event]]:
        return events_by_lead(self.events)


def demo_flow(flow_id: str, services: str, settings: Settings) -> Flow:
    """``flows/demo.yaml`` under ``flow_id``, its services at ``services``, with the HTTP
    intake and seed 003's destinations (module docstring)."""
    text = DEMO_FLOW.read_text(encoding="utf-8").replace("http://127.0.0.1:8765", services)
    data: dict[str, Any] = yaml.safe_load(text)
    data["id"] = flow_id
    data["steps"][0]["settings"]["intake"] = {
        "auth": {"key_env": INTAKE_KEY_ENV},
        "ping": {
            "fields": ["state", "postal_code"],
            "limits": [
                {"maximum": 100_000, "duration": "day", "scope": "flow"},
                {"name": "burst", "maximum": 5_000, "duration": "minute"},
            ],
        },
    }
    prefix = f"seeds/{flow_id}"
    data["destinations"] = [
        Destination(
            kind="s3",
            bucket=settings.s3_bucket,
            prefix=f"{prefix}/s3",
            credentials=S3Credentials(
                access_key_id=SecretRef(env=KEY_ID_ENV), secret_access_key=SecretRef(env=SECRET_ENV)
            ),
        ).model_dump(mode="json", exclude_none=True),
        Destination(
            kind="azure_blob",
            bucket=settings.azure_container,
            prefix=f"{prefix}/azure",
            layout="time",
            credentials=AzureCredentials(connection_string=SecretRef(env=AZURE_ENV)),
        ).model_dump(mode="json", exclude_none=True),
        {"kind": "s3", "bucket": settings.s3_bucket, "prefix": f"{prefix}/off", "enabled": False},
    ]
    return parse_flow(yaml.safe_dump(data), f"{flow_id}.yaml")


@contextmanager
def demo_environment(stack: Settings) -> Iterator[None]:
    """The run's secrets in the environment, as a deployment gives them: a master key (the
    demo seals), the destinations' own credentials, the intake's key."""
    secret = stack.aws_secret_access_key
    values = {
        "LEADFLOW_MASTER_KEY": new_master_key_text(),
        KEY_ID_ENV: stack.aws_access_key_id or "",
        SECRET_ENV: secret.get_secret_value() if secret else "",
        AZURE_ENV: stack.azure_storage_connection_string.get_secret_value(),
        INTAKE_KEY_ENV: uuid.uuid4().hex,
    }
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _send_feedback(
    settings: Settings, ids: dict[str, str], timelines: dict[str, Any]
) -> list[tuple[str, str]]:
    """The buyers report back as the demo's do: one case converts (with its value), one is
    returned, and a few fake leads' deliveries are returned or converted."""
    reports: list[tuple[str, str, dict[str, Any]]] = []
    for case, kind in (("converted", "conversion"), ("returned", "return")):
        reports.append((ids[case], kind, {"value": 120.0} if kind == "conversion" else {}))
    delivered = [
        lead
        for lead, timeline in sorted(timelines.items())
        if lead not in ids.values() and any(e["type"] == "recipient.delivered" for e in timeline)
    ]
    for n, lead in enumerate(delivered[:4]):
        reports.append((lead, "return" if n % 2 else "conversion", {}))
    for lead, kind, extra in reports:
        delivery = next(e for e in timelines[lead] if e["type"] == "recipient.delivered")
        body = {"event_id": delivery["id"], "type": kind, "reason": f"Buyer says {kind}", **extra}
        publish_feedback(settings, orjson.dumps(body), lead.encode())
    return [(lead, kind) for lead, kind, _ in reports]


def _stream(settings: Settings, flow: Flow, events: int) -> None:
    """The flow's streamers until each enabled destination holds ``events`` objects."""
    enabled = [d for d in flow.destinations if d.enabled]
    stores = [open_store(d, settings) for d in enabled]
    stop = threading.Event()
    streamer = threading.Thread(target=run_streamers, args=(settings, flow, stop))
    streamer.start()
    try:
        wait_until(
            lambda: [
                len(event_object_keys(s, d.prefix)) for s, d in zip(stores, enabled, strict=True)
            ],
            120,
            f"{events} event objects in each store",
            until=lambda counts: all(n >= events for n in counts),
            every=0.5,
        )
    finally:
        stop.set()
        streamer.join(30)
        for store in stores:
            store.close()


def run_demo_flow(stack: Settings, run_id: str) -> DemoRun:
    # The breaker on (off by default), so calls record its state as a deployment would;
    # the stores' default credentials wrong, so only the destinations' own can work.
    settings = stack.model_copy(
        update={
            "db_schema": run_id,
            "feedback_topic": f"leadflow.feedback.{run_id}",
            "call_breaker_failures": 5,
            "aws_access_key_id": "not-the-key",
            "aws_secret_access_key": None,
            "azure_storage_connection_string": "UseDevelopmentStorage=false;AccountName=x",
        }
    )
    for case in ("delivered", "converted", "returned"):
        assert decide(CASES[case], mix=True).body["outcome"] == "success", case
    # A hung phone check answers after 3 s: past its 2 s timeout.
    buyer = BuyerServer(port=0, mix=True, slow_seconds=3.0)
    buyer.start_in_thread()
    with demo_environment(stack):
        flow = demo_flow(run_id, buyer.url.rsplit("/", 1)[0], stack)
        assert flow.seals
        migrate_state(settings)
        prepare_topics(settings, flow)
        stop = threading.Event()
        threads = run_steps(settings, flow, stop)
        try:
            sealer = LeadSealer.for_flow(flow, settings)
            assert sealer is not None
            try:
                fake_ids = publish_leads(
                    settings, flow.id, fake_leads(FAKE_LEADS, seed=FAKE_SEED), sealer
                )
                cases = publish_leads(settings, flow.id, list(CASES.values()), sealer)
                ids = dict(zip(CASES, cases, strict=True))
            finally:
                sealer.close()
            ids["over_http"] = post_over_http(
                settings, flow, {**GOOD, "email": "h+lag@example.com"}, "203.0.113.7"
            )
            ids["pinged"] = post_over_http(
                settings,
                flow,
                {**GOOD, "email": "p+lag@example.com"},
                "203.0.113.8",
                ("01PING", 4.5),
            )
            leads = len(fake_ids) + len(ids)
            events = wait_for_completion(settings, flow, leads, timeout=180)
            timelines = events_by_lead(events)
            ids["duplicate"] = publish_leads(settings, flow.id, [DUPLICATE])[0]
            feedback_sent = _send_feedback(settings, ids, timelines)
            sent = len(feedback_sent)
            loop = build_feedback_loop(settings, RunDeliveries(timelines))
            feedback = threading.Thread(target=loop.run, args=(stop,), daemon=True)
            feedback.start()
            threads.append(feedback)
            events = wait_until(
                lambda: read_events(settings, flow, 5),
                90,
                f"{sent} feedbacks processed and the duplicate rejected",
                until=lambda events: (
                    sum(e["type"] == "feedback.processed" for e in events) >= sent
                    and sum(e["type"] == "flow.completed" for e in events) > leads
                ),
                every=1,
            )
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            buyer.stop()
        _stream(settings, flow, len(events))
    return DemoRun(settings, flow, ids, fake_ids, events, feedback_sent)
