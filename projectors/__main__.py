"""Run one timeline projector in the foreground: ``python -m projectors [--pattern R] [--name N]``.

The schema comes from ``LEADFLOW_DB_SCHEMA``, Kafka and Postgres from the
usual settings. SIGTERM/SIGINT write the batch in hand, then exit.
"""

from __future__ import annotations

import argparse
import sys
import threading

from engine.logs import configure_logging
from engine.runtime.kafka.config import librdkafka_property
from engine.runtime.stopping import install_stop_handlers
from engine.settings import get_settings
from projectors.projector import DEFAULT_BATCH_MS, DEFAULT_BATCH_SIZE, TimelineProjector


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m projectors", description="Project lead events into Postgres."
    )
    parser.add_argument(
        "--pattern",
        default=settings.projector_pattern,
        help="regex of the topics to read (default: LEADFLOW_PROJECTOR_PATTERN, every flow)",
    )
    parser.add_argument(
        "--name",
        default=settings.projector_name,
        help="projector name: its consumer group and checkpoint key (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--batch-ms", type=int, default=DEFAULT_BATCH_MS)
    parser.add_argument(
        "-X",
        dest="consumer_config",
        metavar="KEY=VALUE",
        type=librdkafka_property,
        action="append",
        default=[],
        help="extra librdkafka consumer property, e.g. -X group.instance.id=projector-1"
        " (static membership; suffixed with a hash of the topics it matches at start)",
    )
    args = parser.parse_args(argv)
    configure_logging(settings.log_format, settings.log_level)

    stop = threading.Event()

    install_stop_handlers(stop)
    projector = TimelineProjector(
        settings,
        args.pattern,
        args.name,
        batch_size=args.batch_size,
        batch_ms=args.batch_ms,
        consumer_overrides=dict(args.consumer_config),
    )
    projector.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
