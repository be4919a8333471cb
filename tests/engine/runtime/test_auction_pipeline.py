"""The auction step on the real stack: real Kafka, four demo buyers over HTTP, the step on the
concurrent loop, and a worker killed mid-auction that posts nothing twice under two keys.

The buyers are ``engine.demo.buyer`` servers, each bidding its own way: the events on the
topics are the engine's side of the proof, each buyer's own counts (what it was pinged
with, which keys it saw twice) the buyer's."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_lead
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.factories import write_flow
from tests.kafka_helpers import events_by_lead, read_events, run_steps
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

FLOW = """
id: {flow_id}
name: Auction
version: 1
topics: {{partitions: 3, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields:
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
        - {{name: first_name}}
        - {{name: state, type: state, required: true}}
        - {{name: postal_code, type: postal_code}}
  - id: auction
    kind: auction
    name: Solar auction
    settings:
      bid_window_ms: {window_ms}
      timeout_ms: 5000
      buyers:
{buyers}
"""
BUYER = """        - id: {id}
          name: {id}
          ping_url: {ping_url}
          post_url: {post_url}
          ping_fields: [state, postal_code]
          accept: {{path: outcome, value: {accept}}}
          caps: {caps}
"""
PING_FIELDS = {"state", "postal_code"}


def auction_flow(
    flow_id: str,
    buyers: dict[str, BuyerServer],
    window_ms: int,
    caps: dict[str, int] | None = None,
    **accept: str,
) -> Flow:
    def capped(name: str) -> str:
        maximum = (caps or {}).get(name)
        return f"[{{maximum: {maximum}, duration: day}}]" if maximum else "[]"

    listed = "".join(
        BUYER.format(
            id=name,
            ping_url=b.ping_url,
            post_url=b.url,
            accept=accept.get(name, "success"),
            caps=capped(name),
        )
        for name, b in buyers.items()
    )
    text = FLOW.format(flow_id=flow_id, window_ms=window_ms, buyers=listed)
    return parse_flow(text, "auction.yaml")


@pytest.fixture
def buyers() -> Iterator[dict[str, BuyerServer]]:
    servers = {
        # Bids 20 and takes the post.
        "alpha": BuyerServer(port=0, mix=False, bid_price=20.0),
        # Bids highest (35), but its post is judged refused (the flow wants "sold").
        "beta": BuyerServer(port=0, mix=False, bid_price=35.0),
        # Would bid 50, after the window: late, ignored.
        "gamma": BuyerServer(port=0, mix=False, bid_price=50.0, ping_delay_s=5.0),
        # Never bids.
        "delta": BuyerServer(port=0, mix=False, bid_price=0.0),
    }
    for server in servers.values():
        server.start_in_thread()
    yield servers
    for server in servers.values():
        server.stop()


def completed(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "flow.completed" for e in events)


def wait_for_all(
    settings: Settings, flow: Flow, leads: int, timeout: float
) -> list[dict[str, Any]]:
    return wait_until(
        lambda: read_events(settings, flow, 10),
        timeout,
        f"all {leads} leads of {flow.id} to complete",
        until=lambda events: completed(events) >= leads,
        every=1,
        show=lambda events: f"{completed(events)} completed",
    )


def auctioned(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per lead that reached the auction, its auction step's events, in order."""
    timelines = events_by_lead(events)
    return {
        lead: [e for e in timeline if e["step_id"] == "auction"]
        for lead, timeline in timelines.items()
        if any(e["type"] == "recipient.pinged" for e in timeline)
    }


def test_an_auction_pings_everyone_posts_the_best_bid_and_falls_back_on_a_refusal(
    state_settings: Settings, unique_id: str, buyers: dict[str, BuyerServer]
) -> None:
    # The window far from both the prompt buyers' answers and gamma's late one: on a loaded
    # machine (CI's workers on two cores) a local buyer's prompt answer once took ~1 s, and
    # missed a 750 ms window. What the window does on time is the auction's own unit tests'.
    flow = auction_flow(unique_id, buyers, window_ms=2500, beta="sold")
    prepare_topics(state_settings, flow)
    rng = random.Random(21)
    ids = publish_leads(state_settings, flow.id, [fake_lead(rng, n) for n in range(60)])
    stop = threading.Event()
    threads = run_steps(state_settings, flow, stop)
    try:
        events = wait_for_all(state_settings, flow, len(ids), 90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert [i for i, n in Counter(e["id"] for e in events).items() if n > 1] == []
    runs = auctioned(events)
    assert len(runs) >= 10, Counter(e["type"] for e in events)
    for lead, steps in runs.items():
        seen = [(e["type"], e["entity_id"], e["outcome"]) for e in steps]
        assert seen == [
            ("recipient.pinged", "alpha", "success"),
            ("recipient.pinged", "beta", "success"),
            ("recipient.pinged", "gamma", "failure"),
            ("recipient.pinged", "delta", "failure"),
            ("recipient.failed", "beta", "failure"),
            ("recipient.delivered", "alpha", "success"),
            ("flow.completed", unique_id, "success"),
        ], (lead, [(e["reason"], e["wait_ms"]) for e in steps])
        late, delivered, done = steps[2], steps[5], steps[6]
        assert late["appended"]["appended.auction.bids.gamma.status"] == "late"
        assert steps[3]["reason"] == "No bid"
        assert steps[1]["appended"]["appended.auction.bids.beta.price"] == 35.0
        # The winner's revenue is its bid, and so is the lead's.
        assert delivered["revenue"] == 20.0 and done["revenue"] == 20.0
        assert delivered["appended"]["appended.auction.winner"] == "alpha"
        # The window the pings waited and the posts' time are the service's, on every event.
        assert delivered["wait_ms"] == late["wait_ms"] > 0
    # The buyers' side: pings carried the ping fields only; each post came once per lead.
    for name in ("gamma", "delta"):  # never posted to: everything they got is a ping
        bodies = list(buyers[name].bodies)
        assert bodies and all(set(body) <= PING_FIELDS for body in bodies), bodies[:3]
    alpha = buyers["alpha"]
    assert len(alpha.received) == len(set(alpha.received)) == len(runs)
    assert len(buyers["beta"].received) == len(runs)
    assert buyers["gamma"].received == [] and buyers["delta"].received == []
    assert all(b.stats.snapshot()["duplicates"] == 0 for b in buyers.values())


@pytest.fixture
def state_settings(stack: Settings, unique_id: str) -> Iterator[Settings]:
    """Settings on a fresh Postgres schema (caps, the auction ledger), dropped afterwards."""
    yield stack.model_copy(update={"db_schema": unique_id})
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id)))


def test_a_buyer_at_its_cap_is_neither_pinged_nor_posted_and_the_next_bid_wins(
    state_settings: Settings, unique_id: str
) -> None:
    servers = {
        "alpha": BuyerServer(port=0, mix=False, bid_price=40.0),  # best, but 3 a day
        "beta": BuyerServer(port=0, mix=False, bid_price=25.0),
    }
    for server in servers.values():
        server.start_in_thread()
    try:
        # Every buyer answers promptly, so the window ends with the last bid; it is wide only
        # so that a loaded machine cannot make a prompt bid late (see the test above).
        flow = auction_flow(unique_id, servers, window_ms=3000, caps={"alpha": 3})
        prepare_topics(state_settings, flow)
        rng = random.Random(41)
        ids = publish_leads(state_settings, flow.id, [fake_lead(rng, n) for n in range(40)])
        stop = threading.Event()
        threads = run_steps(state_settings, flow, stop)
        try:
            events = wait_for_all(state_settings, flow, len(ids), 90)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    finally:
        for server in servers.values():
            server.stop()
    runs = auctioned(events)
    assert len(runs) >= 6, Counter(e["type"] for e in events)
    won = Counter(
        (e["entity_id"], e["revenue"])
        for steps in runs.values()
        for e in steps
        if e["type"] == "recipient.delivered"
    )
    # Exactly the cap to alpha, at its price; every other lead to beta, at beta's.
    assert won == {("alpha", 40.0): 3, ("beta", 25.0): len(runs) - 3}, won
    capped = [
        e
        for steps in runs.values()
        for e in steps
        if e["type"] == "recipient.failed" and e["entity_id"] == "alpha"
    ]
    assert len(capped) == len(runs) - 3
    assert all(e["cap_reached"] and e["reason"] == "Daily cap reached (3/3)" for e in capped)
    # Alpha heard of only the leads it could take: three pings, three posts.
    assert len(servers["alpha"].pinged) == 3 and len(servers["alpha"].received) == 3


def start_worker(role: str, flow_file: Path, schema: str) -> subprocess.Popen[bytes]:
    """The step's worker in a process of its own (to be killed), its state in ``schema``."""
    env = {
        **os.environ,
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
        "LEADFLOW_DB_SCHEMA": schema,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", role, "--flow-file", str(flow_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.serial
def test_an_auction_worker_killed_mid_auction_posts_again_only_under_the_same_key(
    state_settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    """kill -9 of the auction step while pings and posts are out: the next worker re-runs the
    unfinished auctions, whose posts carry the keys the first run's did (the buyer counts
    them as duplicates of the same key), and each lead's delivery is on the topic once."""
    servers = {
        "alpha": BuyerServer(port=0, mix=False, bid_price=30.0, latency_s=0.3),
        "beta": BuyerServer(port=0, mix=False, bid_price=10.0, latency_s=0.3),
        "gamma": BuyerServer(port=0, mix=False, bid_price=20.0, latency_s=0.3),
    }
    for server in servers.values():
        server.start_in_thread()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        flow = auction_flow(unique_id, servers, window_ms=1500)
        flow_file = write_flow(tmp_path / "flow.yaml", flow)
        prepare_topics(state_settings, flow)
        rng = random.Random(31)
        ids = publish_leads(state_settings, flow.id, [fake_lead(rng, n) for n in range(400)])
        procs = {role: start_worker(role, flow_file, unique_id) for role in ("source", "auction")}
        alpha = servers["alpha"]
        wait_until(
            lambda: len(alpha.received),
            60,
            "posts to the winning buyer",
            until=lambda n: n >= 20,
            every=0.05,
        )
        wait_until(
            lambda: alpha.stats.snapshot()["in_flight"],
            30,
            "posts in flight at the winning buyer",
            until=lambda n: n >= 5,
            every=0.01,
        )
        procs["auction"].kill()  # SIGKILL: no shutdown code runs
        procs["auction"].wait()
        time.sleep(0.5)
        procs["auction"] = start_worker("auction", flow_file, unique_id)
        events = wait_for_all(state_settings, flow, len(ids), 180)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        for server in servers.values():
            server.stop()
    assert [i for i, n in Counter(e["id"] for e in events).items() if n > 1] == []
    runs = auctioned(events)
    assert len(runs) >= 50
    for lead, steps in runs.items():
        types = [(e["type"], e["entity_id"]) for e in steps]
        assert types.count(("recipient.delivered", "alpha")) == 1, (lead, types)
        assert types[-1][0] == "flow.completed"
    # Alpha took each lead under one key: a re-posted lead came with its first key again.
    alpha_posts = servers["alpha"].received
    assert len(set(alpha_posts)) == len(runs)
    seen = servers["alpha"].stats.snapshot()
    again = len(alpha_posts) - len(set(alpha_posts))
    assert again > 0, seen  # the kill caught posts out: they were made again, same keys
    # ... and answered them as replays of the first: the same delivery, not a new lead.
    assert seen["duplicates"] >= again, seen
    # Never to a second buyer: the lower bids were never posted to.
    assert servers["beta"].received == [] and servers["gamma"].received == []


def key_buyer(key: str) -> tuple[str, str]:
    """An auction post's idempotency key as (the auction's part, the buyer's id)."""
    base, _, buyer = key.rpartition(".")
    return base, buyer


@pytest.mark.serial
def test_a_killed_auction_goes_on_from_its_record_and_sells_each_lead_once(
    state_settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    """Buyers that bid a new random price on every ping, a repeated one too: an auction run
    again from scratch would most often crown another winner and sell the lead twice. kill
    -9 of the auction step with posts out (sent, not committed): the next worker goes on
    from the auction ledger, pings no one again for those leads, posts only where the first
    run did, under the same key; each lead is sold to one buyer, its events are on once."""
    names = ("alpha", "beta", "gamma")
    servers = {
        name: BuyerServer(port=0, mix=False, bid_random_seed=seed, latency_s=0.3)
        for seed, name in enumerate(names)
    }
    for server in servers.values():
        server.start_in_thread()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        flow = auction_flow(unique_id, servers, window_ms=1500)
        flow_file = write_flow(tmp_path / "flow.yaml", flow)
        prepare_topics(state_settings, flow)
        rng = random.Random(53)
        ids = publish_leads(state_settings, flow.id, [fake_lead(rng, n) for n in range(400)])
        procs = {role: start_worker(role, flow_file, unique_id) for role in ("source", "auction")}
        wait_until(
            lambda: sum(len(s.received) for s in servers.values()),
            60,
            "posts to the buyers",
            until=lambda n: n >= 20,
            every=0.05,
        )
        wait_until(
            lambda: sum(s.stats.snapshot()["in_flight"] for s in servers.values()),
            30,
            "calls in flight at the buyers",
            until=lambda n: n >= 8,
            every=0.01,
        )
        procs["auction"].kill()  # SIGKILL: no shutdown code runs
        procs["auction"].wait()
        time.sleep(0.5)
        procs["auction"] = start_worker("auction", flow_file, unique_id)
        events = wait_for_all(state_settings, flow, len(ids), 180)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        for server in servers.values():
            server.stop()
    assert [i for i, n in Counter(e["id"] for e in events).items() if n > 1] == []
    runs = auctioned(events)
    assert len(runs) >= 50
    sold: dict[str, str] = {}  # the auction's part of the post key -> the buyer it was sold to
    for lead, steps in runs.items():
        types = [(e["type"], e["entity_id"]) for e in steps]
        assert sorted(b for t, b in types if t == "recipient.pinged") == list(names), types
        assert types[-1][0] == "flow.completed", (lead, types)
        delivered = [e for e in steps if e["type"] == "recipient.delivered"]
        if not delivered:  # no bid at all (outside every buyer's area): never posted
            assert not any(
                e["type"] == "recipient.failed" and e["entity_id"] in names for e in steps
            ), types
            continue
        (won,) = delivered
        # The winner is the best bid of the pings on the topic: the ranking the lead's
        # events show is the one its post followed, even where the auction was re-run.
        bids = {
            e["entity_id"]: e["appended"][f"appended.auction.bids.{e['entity_id']}.price"]
            for e in steps
            if e["type"] == "recipient.pinged" and e["outcome"] == "success"
        }
        best = max(bids.values())
        assert won["entity_id"] == next(b for b in names if bids.get(b) == best), (lead, bids)
        assert won["revenue"] == best
        base, buyer = key_buyer(won["request"]["headers"]["Idempotency-Key"])
        assert buyer == won["entity_id"]
        sold[base] = buyer
    # The buyers' side, by idempotency key: each auction was posted to one buyer only, the
    # one its events name, and every post a buyer got belongs to a lead on the topic.
    posted: dict[str, set[str]] = {}
    for name, server in servers.items():
        for key in server.received:
            base, buyer = key_buyer(key)
            assert buyer == name
            posted.setdefault(base, set()).add(name)
    assert {base: {buyer} for base, buyer in sold.items()} == posted
    # The kill caught posts out: they were made again, under their first keys ...
    repeated = {
        key_buyer(key)[0]
        for server in servers.values()
        for key, n in Counter(server.received).items()
        if n > 1
    }
    assert repeated, {n: s.stats.snapshot() for n, s in servers.items()}
    # ... by a re-run that went on from the ledger: no buyer was pinged again for them.
    for name, server in servers.items():
        pings = Counter(server.pinged)
        assert all(pings[f"{base}.{name}.ping"] == 1 for base in repeated), name
    with psycopg.connect(
        state_settings.database_url.get_secret_value(),
        options=f"-c search_path={unique_id}",
    ) as conn:
        row = conn.execute("SELECT count(*) FROM engine_auction_ledger").fetchone()
    assert row is not None and row[0] == len(sold)  # a record per auction with a bid
