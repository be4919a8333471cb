"""``python -m bench [--quick] [--rounds N] [--only NAME...]``: run the benchmark, write and
print its results. ``make bench`` runs it in the bench venv (``bench/.venv``)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from bench import report
from bench.inputs import accepted_events, fill
from bench.kafka_admin import create_topics
from bench.runner import RunConfig, console
from bench.scenarios.registry import SCENARIOS, cleanup, run_scenario
from engine.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="less data, under 3 minutes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per scenario (3)")
    parser.add_argument("--events", type=int, default=None, help="records in the shared input")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and schemas")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    started = datetime.now(UTC)
    config = RunConfig(
        run_id=started.strftime("%m%d%H%M%S"),
        quick=args.quick,
        rounds=args.rounds or (2 if args.quick else 3),
        events=args.events or (15_000 if args.quick else 150_000),
        partitions=settings.topic_partitions,
        commit_interval_ms=settings.commit_interval_ms,
        bootstrap=settings.kafka_bootstrap_servers,
    )
    console.print(f"bench run {config.run_id}: {config.events:,} events, {config.rounds} rounds")
    create_topics(settings, [config.input_topic, config.output_topic], config.partitions)
    records = accepted_events(f"b{config.run_id}", config.events)
    size = fill(settings, config.input_topic, records)
    del records
    results = {}
    try:
        for name in args.only or list(SCENARIOS):
            results[name] = run_scenario(name, config, record_size=size // config.events)
    finally:
        if not args.keep:
            cleanup(settings, config)
    run = {
        "run_id": config.run_id,
        "quick": config.quick,
        "rounds": config.rounds,
        "input_topic": config.input_topic,
        "input_events": config.events,
        "input_bytes": size,
        "partitions": config.partitions,
        "commit_interval_ms": config.commit_interval_ms,
    }
    doc = report.document(run, results, started)
    path = report.write(doc)
    report.print_tables(doc)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
