"""Run the streamers of one flow: ``python -m streamers --flow-file flows/demo.yaml``."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from engine.errors import ConfigError
from engine.flows import load_flow
from engine.logs import configure_logging
from engine.objects.contract import DEFAULT_THREADS
from engine.runtime.kafka.config import librdkafka_property
from engine.runtime.stopping import install_stop_handlers
from engine.settings import get_settings
from streamers.service import stream_flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamers",
        description="Stream a flow's lead events to its S3 / Azure Blob destinations.",
    )
    parser.add_argument("--flow-file", type=Path, help="flow YAML (default: LEADFLOW_FLOW_FILE)")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="concurrent writes per destination"
    )
    parser.add_argument(
        "-X",
        dest="consumer_config",
        metavar="KEY=VALUE",
        type=librdkafka_property,
        action="append",
        default=[],
        help="extra librdkafka consumer property, e.g. -X group.instance.id=streamer-1"
        " (static membership; suffixed with a hash of the topics it matches at start)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve prometheus metrics at http://127.0.0.1:PORT/metrics "
        "(default: LEADFLOW_STREAMER_METRICS_PORT; 0: off)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        flow = load_flow(args.flow_file or settings.flow_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    stop = threading.Event()

    install_stop_handlers(stop)
    stream_flow(
        settings,
        flow,
        stop,
        threads=args.threads,
        consumer_overrides=dict(args.consumer_config),
        metrics_port=(
            args.metrics_port if args.metrics_port is not None else settings.streamer_metrics_port
        )
        or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
