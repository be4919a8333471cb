"""Which scenarios exist, in the order they run, and what each records beside its figures."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from bench.flows import filter_flow
from bench.inputs import fill
from bench.kafka_admin import create_topics, delete_topics
from bench.results_model import ScenarioResult
from bench.runner import RunConfig, child_scenario, console, run_child, run_rounds
from bench.scenarios.broker import PRODUCER_PROPS
from bench.scenarios.e2e import SERVICE_ROLES
from bench.scenarios.intake import SERVE_WORKERS
from bench.scenarios.peer_settings import SETTINGS
from bench.scenarios.replay import archive_prefix
from bench.sealed_input import SENSITIVE, sealed_events, sealing
from engine.destinations import Destination
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.sealing import new_master_key_text
from engine.settings import Settings
from engine.transport import postgres_tls

Scenario = Callable[[RunConfig, int], ScenarioResult]


def _passthrough(config: RunConfig, _: int) -> ScenarioResult:
    passes = max(1, 300_000 // config.events)
    result = child_scenario("passthrough", "events_s", "events/s", config, 300, passes=passes)
    result.units["mb_s"] = "MB/s"
    result.settings = {
        "commit_interval_ms": config.commit_interval_ms,
        "passes_over_input": passes,
        "configs": "engine.runtime.kafka consumer/transactional producer",
    }
    return result


def _step(config: RunConfig, _: int) -> ScenarioResult:
    """Each round: the step in single-object encoding, then in registry mode (the Confluent
    wire format with the stack registry's id), each in a fresh child and group."""
    result = ScenarioResult("step", "events_s", "events/s")
    result.units.update(
        cpu_ms_per_event="ms",
        registry_events_s="events/s",
        encode_framed_events_s="events/s",
        encode_avro_serializer_events_s="events/s",
    )
    result.settings = {
        "step": "filter (service-area, 2 rules), followed by a buyer step",
        "worker": "build_step_loop",
        "events_out": "filter.passed, or filter.failed + flow.completed (~26% of leads)",
        "encodings": "events_s: single-object; registry_events_s: Confluent wire format"
        " (input: the shared single-object topic, read by the same decoder either way)",
    }

    def one_round(index: int) -> dict[str, float]:
        single = run_child("step", config.params(round=index), 300)
        framed = run_child("step", config.params(round=index, encoding="registry"), 300)
        return {
            "events_s": float(single["events_s"]),
            "cpu_ms_per_event": float(single["cpu_ms_per_event"]),
            "dead_lettered": float(single["dead_lettered"]),
            "registry_events_s": float(framed["events_s"]),
            "encode_framed_events_s": float(framed["encode_framed_events_s"]),
            "encode_avro_serializer_events_s": float(framed["encode_avro_serializer_events_s"]),
            "avro_serializer_same_bytes": float(framed["same_bytes"]),
        }

    return run_rounds(result, config, one_round)


def _step_sealed(config: RunConfig, _: int) -> ScenarioResult:
    """``step`` with sealing on: the same leads, personal fields sealed, keys in Postgres."""
    settings = Settings().model_copy(update={"db_schema": f"b{config.run_id}_sealed"})
    topic = f"bench.{config.run_id}.input-sealed"
    master = new_master_key_text()  # a throwaway key for throwaway data; children inherit it
    flow = sealing(filter_flow(f"b{config.run_id}-step-sealed", config.partitions))
    create_topics(settings, [topic], config.partitions)
    fill(settings, topic, sealed_events(settings, master, flow, config.events))
    before = os.environ.get("LEADFLOW_MASTER_KEY")
    os.environ["LEADFLOW_MASTER_KEY"] = master
    try:
        result = child_scenario(
            "step",
            "events_s",
            "events/s",
            config,
            300,
            sealed=True,
            db_schema=settings.db_schema,
            input_topic=topic,
        )
    finally:
        if before is None:
            os.environ.pop("LEADFLOW_MASTER_KEY", None)
        else:
            os.environ["LEADFLOW_MASTER_KEY"] = before
    result.name = "step_sealed"
    result.units["cpu_ms_per_event"] = "ms"
    result.settings = {
        "step": "step's filter, its flow sealing the demo's personal fields",
        "sealed": ", ".join(SENSITIVE),
        "keys": "Postgres engine_lead_keys, looked up only when a value is opened or sealed"
        " (one query per fetched batch); this filter reads no personal field, so none are",
    }
    return result


def _step_rss(config: RunConfig, _: int) -> ScenarioResult:
    """One long round: a step worker's memory over a million events (200k quick)."""
    events = 200_000 if config.quick else 1_000_000
    result = ScenarioResult("step_rss", "rss_growth_mb", "MiB")
    result.units.update(
        events="events",
        events_s="events/s",
        rss_first_mb="MiB",
        rss_last_mb="MiB",
        rss_max_mb="MiB",
    )
    result.settings = {"events": events, "sample_every": events // 20, "worker": "build_step_loop"}
    params = config.params(round=1, rss_events=events, sample_every=events // 20)

    def one_round(_: int) -> dict[str, float]:
        out: dict[str, Any] = run_child("step_rss", params, 1800)
        result.series["rss_mb_by_events"] = out.pop("series")
        return {k: float(v) for k, v in out.items()}

    return run_rounds(result, replace(config, rounds=1), one_round)


def _peer(config: RunConfig, _: int) -> ScenarioResult:
    result = ScenarioResult("peer", "events_s", "events/s")
    result.settings = {**SETTINGS, "commit_interval_s": config.commit_interval_ms / 1000}
    if importlib.util.find_spec("quixstreams") is None:
        result.errors.append("quixstreams is not installed here: run `make bench` (bench/.venv)")
        return result
    version = importlib.metadata.version("quixstreams")
    result.notes.append(
        f"Quix Streams {version}: one poll() per message; the hand-off header is not checked"
    )
    return run_rounds(result, config, lambda i: run_child("peer", config.params(round=i), 300))


def _broker(config: RunConfig, record_size: int) -> ScenarioResult:

    result = ScenarioResult("broker", "produce_mb_s", "MB/s")
    records = max(300_000, config.events * 3)  # enough for the JVM's JIT to warm up
    result.settings = {
        "records": records,
        "record_size": record_size,
        "producer_props": list(PRODUCER_PROPS),
    }
    result.units.update(consume_mb_s="MB/s", produce_records_s="rec/s", consume_records_s="rec/s")
    result.notes.append(
        "perf-tool payloads are random text lz4 barely compresses, leadflow's Avro compresses"
        " well: MB/s ratios compare record bytes moved, not bytes on the wire"
    )
    params = config.params(broker_records=records, record_size=record_size)
    return run_rounds(result, config, lambda i: run_child("broker", {**params, "round": i}, 600))


def _projector(config: RunConfig, _: int) -> ScenarioResult:
    result = child_scenario("projector", "events_s", "events/s", config, 600)
    result.units.update(bare_copy_events_s="events/s", decode_events_s="events/s")
    result.settings = {
        "path": "projectors.store.write_batch (timeline)",
        "batch": 2000,
        "bare": "binary COPY into LIKE events INCLUDING ALL",
    }
    result.notes.append("one event per lead: the leads upsert's worst case")
    return result


def _replay(config: RunConfig, _: int) -> ScenarioResult:
    result = child_scenario("replay", "events_s", "events/s", config, 600)
    result.units.update(seconds="s", archive_events_s="events/s", archive_seconds="s")
    result.settings = {
        "path": "projectors.replay.Rebuild('timeline')",
        "batch": 2000,
        "archive": "projectors.archive_replay.ArchiveRebuild('timeline'), s3 jsonl.gz objects"
        " of 10,000 records written by streamers.batched",
    }
    return result


def _e2e(config: RunConfig, _: int) -> ScenarioResult:

    result = ScenarioResult("e2e", "leads_s", "leads/s")
    leads = 800 if config.quick else 5_000
    seconds = 8.0 if config.quick else 30.0
    result.settings = {
        "burst_leads": leads,
        "latency_seconds": seconds,
        "workers": "5 steps + " + " + ".join(SERVICE_ROLES),
        "streamer": "s3 jsonl.gz (batched)",
    }
    params = config.params(round=1, rounds=config.rounds, e2e_leads=leads, latency_seconds=seconds)
    try:
        out: dict[str, Any] = run_child("e2e", params, 1200)
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return result
    for leads_s, mb_s in zip(out["leads_s"], out["mb_s"], strict=True):
        result.add({"leads_s": leads_s, "mb_s": mb_s})
    result.add(
        {
            k: out[k]
            for k in (
                "offered_rate",
                "latency_p50_ms",
                "latency_p95_ms",
                "latency_p99_ms",
                "overhead_ms_median",
                "machine_busy_pct",
                "quiet_offered_rate",
                "quiet_latency_p50_ms",
                "quiet_latency_p99_ms",
                "quiet_machine_busy_pct",
                "projected_events",
            )
        }
    )
    result.units.update(
        mb_s="MB/s",
        offered_rate="leads/s",
        latency_p50_ms="ms",
        latency_p95_ms="ms",
        latency_p99_ms="ms",
        overhead_ms_median="ms",
        machine_busy_pct="%",
        quiet_offered_rate="leads/s",
        quiet_latency_p50_ms="ms",
        quiet_latency_p99_ms="ms",
        quiet_machine_busy_pct="%",
        projected_events="events",
    )
    for step, ms in out["overhead_ms_median_by_step"].items():
        result.add({f"overhead_ms.{step}": ms}, {f"overhead_ms.{step}": "ms"})
    for step, ms in out["lag_ms_p95_by_step"].items():
        result.add({f"lag_ms_p95.{step}": ms}, {f"lag_ms_p95.{step}": "ms"})
    for step, ms in out["quiet_lag_ms_p95_by_step"].items():
        result.add({f"quiet_lag_ms_p95.{step}": ms}, {f"quiet_lag_ms_p95.{step}": "ms"})
    for step, ms in out.get("wait_ms_p95_by_step", {}).items():
        result.add({f"wait_ms_p95.{step}": ms}, {f"wait_ms_p95.{step}": "ms"})
    for role, mb in out["rss_peak_mb"].items():
        result.add({f"rss_peak_mb.{role}": mb}, {f"rss_peak_mb.{role}": "MiB"})
    result.notes.extend(out["notes"])
    return result


def _slow_buyer(config: RunConfig, _: int) -> ScenarioResult:
    """One recipient process at buyer speed (bench/scenarios/slow_buyer.py)."""
    from bench.scenarios import slow_buyer as scenario

    result = ScenarioResult("slow_buyer", "leads_s", "leads/s")
    leads = 2_000 if config.quick else 6_000
    seconds = 10.0 if config.quick else 30.0
    result.settings = {
        "buyer": f"lognormal median {scenario.MEDIAN_MS} ms, p99 {scenario.P99_MS} ms,"
        f" {scenario.TIMEOUT_FRACTION:.0%} never answered",
        "deadline_ms": scenario.DEADLINE_MS,
        "workers": "source + one recipient process, 3 partitions",
        "burst_leads": leads,
        "latency_seconds": seconds,
    }
    result.units.update(
        cpu_ms_per_lead="ms",
        offered_rate="leads/s",
        latency_p50_ms="ms",
        latency_p99_ms="ms",
        buyer_p50_ms="ms",
        buyer_p99_ms="ms",
        overhead_ms_median="ms",
        e2e_p99_over_buyer_p99_ms="ms",
        buyer_duplicates="posts",
        buyer_peak_in_flight="calls",
    )
    params = config.params(slow_leads=leads, slow_seconds=seconds)

    def one_round(index: int) -> dict[str, float]:
        out: dict[str, Any] = run_child("slow_buyer", {**params, "round": index}, 900)
        result.notes.extend(n for n in out.pop("notes") if n not in result.notes)
        return {k: float(v) for k, v in out.items()}

    rounds = 1 if config.quick else config.rounds
    return run_rounds(result, replace(config, rounds=rounds), one_round)


def _auction(config: RunConfig, _: int) -> ScenarioResult:
    """A ping-post auction among five buyers (bench/scenarios/auction.py)."""
    from bench.scenarios import auction as scenario

    result = ScenarioResult("auction", "posted_p99_ms", "ms")
    rate, seconds = (20.0, 10.0) if config.quick else (40.0, 30.0)
    result.settings = {
        "buyers": f"{scenario.BUYERS} demo buyers, each its own process: lognormal median"
        f" {scenario.MEDIAN_MS} ms, p99 {scenario.P99_MS} ms on pings and posts",
        "bid_window_ms": scenario.WINDOW_MS,
        "post_deadline_ms": scenario.DEADLINE_MS,
        "workers": "source + one auction process, 3 partitions",
        "offered_rate": rate,
        "seconds": seconds,
        "posted": "winning recipient.delivered timestamp - source.accepted timestamp",
    }
    result.units.update(
        offered_rate="leads/s",
        leads_accepted="leads",
        leads_sold="leads",
        posted_p50_ms="ms",
        post_p50_ms="ms",
        post_p99_ms="ms",
        posted_p99_over_budget_ms="ms",
        late_ping_share="share",
        buyer_duplicates="posts",
    )
    params = config.params(auction_rate=rate, auction_seconds=seconds)

    def one_round(index: int) -> dict[str, float]:
        out: dict[str, Any] = run_child("auction", {**params, "round": index}, 600)
        result.notes.extend(n for n in out.pop("notes") if n not in result.notes)
        return {k: float(v) for k, v in out.items()}

    rounds = 1 if config.quick else config.rounds
    return run_rounds(result, replace(config, rounds=rounds), one_round)


def _intake(config: RunConfig, _: int) -> ScenarioResult:

    result = ScenarioResult("intake", "requests_s", "requests/s")
    rate, seconds = (200.0, 10.0) if config.quick else (200.0, 30.0)
    result.settings = {
        "endpoint": "POST /flows/{flow}/sources/{source}, JSON, X-API-Key (key_env)",
        "server": f"leadflow serve --workers {SERVE_WORKERS}",
        "workers": "source + filter, one `leadflow run -f FLOW ROLE` each",
        "wait_for": "source",
        "offered_rps": rate,
        "seconds": seconds,
        "load": "bench/intake_load.py, open loop, its own process",
    }
    params = config.params(intake_rate=rate, intake_seconds=seconds)

    def one_round(index: int) -> dict[str, float]:
        out: dict[str, Any] = run_child("intake", {**params, "round": index}, 300)
        result.notes.extend(note for note in out.pop("notes") if note not in result.notes)
        statuses: dict[str, int] = out.pop("status")
        # Every status a round saw, and 0 for the ones it did not (so medians stay honest).
        seen = {k.removeprefix("status.") for k in result.rounds if k.startswith("status.")}
        for status in seen | set(statuses):
            result.units[f"status.{status}"] = "requests"
            out[f"status.{status}"] = statuses.get(status, 0)
        return {k: float(v) for k, v in out.items()}

    result.units.update(
        offered_rps="requests/s",
        requests="requests",
        latency_p50_ms="ms",
        latency_p99_ms="ms",
        latency_max_ms="ms",
    )
    rounds = 1 if config.quick else config.rounds
    return run_rounds(result, replace(config, rounds=rounds), one_round)


def _streamer(config: RunConfig, _: int) -> ScenarioResult:
    """One streamer process per store and layout, beside a bare SDK PUT loop
    (bench/scenarios/streamer.py)."""
    from bench.scenarios import streamer as scenario

    events = 1_500 if config.quick else 10_000
    result = ScenarioResult("streamer", "events_s", "events/s")
    result.settings = {
        "process": "leadflow run -f FLOW streamer (one destination per flow)",
        "burst_events": events,
        "warm_up_events": scenario.WARM_UP_EVENTS,
        "partitions": config.partitions,
        "batched": "jsonl.gz, max_records 1000, max_seconds 1",
        "bare": "boto3 put_object / azure upload_blob, create-only, same thread count",
        "servers": "SeaweedFS S3 (S3_ENDPOINT_URL), Azurite (AZURE_STORAGE_CONNECTION_STRING)",
    }
    for name, _kind, _format in scenario.CASES:
        result.units.update(
            {
                f"{name}.events_s": "events/s",
                f"{name}.objects_s": "objects/s",
                f"{name}.mb_s": "MB/s",
                f"{name}.cpu_ms_per_event": "ms",
                f"{name}.object_bytes": "bytes",
                f"{name}.bare_objects_s": "objects/s",
                f"{name}.bare_mb_s": "MB/s",
                f"{name}.bare_cpu_ms_per_object": "ms",
            }
        )
    result.notes.append("events_s (primary) is the S3 per-event streamer's")
    params = config.params(streamer_events=events)
    return run_rounds(result, config, lambda i: run_child("streamer", {**params, "round": i}, 1800))


def _scale_out(config: RunConfig, _: int) -> ScenarioResult:
    """1, 2 and 4 processes of one filter step (bench/scenarios/scale_out.py)."""
    from bench.scenarios import scale_out as scenario

    events = 90_000 if config.quick else 240_000
    result = ScenarioResult("scale_out", "events_s_per_process", "events/s")
    result.settings = {
        "step": f"filter ({scenario.STEP}), `leadflow run -f FLOW {scenario.STEP}` per process",
        "partitions": scenario.PARTITIONS,
        "processes": list(scenario.PROCESS_COUNTS),
        "burst_events": events,
        "warm_up_events": scenario.WARM_UP_EVENTS,
        "cpu": "utime + stime of the step processes over the burst (/proc)",
    }
    for n in scenario.PROCESS_COUNTS:
        result.units.update(
            {
                f"p{n}.events_s": "events/s",
                f"p{n}.events_s_per_process": "events/s",
                f"p{n}.cpu_ms_per_event": "ms",
                f"p{n}.busy_cpu_ms_per_event": "ms",
                f"p{n}.idle_cpu_pct_per_process": "%",
            }
        )
    result.notes.append(
        f"{os.cpu_count()} CPUs: with more processes than cores totals cannot grow;"
        " compare cpu_ms_per_event across process counts (flat is the goal)"
    )
    params = config.params(scale_events=events)
    return run_rounds(
        result, config, lambda i: run_child("scale_out", {**params, "round": i}, 1800)
    )


SCENARIOS: dict[str, Scenario] = {
    "broker": _broker,
    "passthrough": _passthrough,
    "step": _step,
    "step_sealed": _step_sealed,
    "peer": _peer,
    "step_rss": _step_rss,
    "projector": _projector,
    "replay": _replay,
    "e2e": _e2e,
    "slow_buyer": _slow_buyer,
    "auction": _auction,
    "intake": _intake,
    "streamer": _streamer,
    "scale_out": _scale_out,
}


def run_scenario(name: str, config: RunConfig, record_size: int) -> ScenarioResult:
    console.rule(name)
    return SCENARIOS[name](config, record_size)


def cleanup(settings: Settings, config: RunConfig) -> None:
    """The run's topics and Postgres schemas; consumer groups expire on their own."""
    deleted = delete_topics(settings, f"bench.{config.run_id}.")
    deleted += delete_topics(settings, f"leadflow.b{config.run_id}")
    with psycopg.connect(
        settings.database_url.get_secret_value(), autocommit=True, **postgres_tls(settings)
    ) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"b{config.run_id}%",)
        ).fetchall()
        for (schema,) in names:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    objects = _delete_archive(settings, config)
    console.print(f"cleaned up {len(deleted)} topics, {len(names)} schemas, {objects} objects")


def _delete_archive(settings: Settings, config: RunConfig) -> int:
    """The replay scenario's archive objects on the local S3."""
    store = open_store(Destination(kind="s3", bucket=settings.s3_bucket), settings, threads=4)
    try:
        keys = store.list_keys(directory(archive_prefix(config.run_id)))
        for key in keys:
            store.delete(key)
    finally:
        store.close()
    return len(keys)
