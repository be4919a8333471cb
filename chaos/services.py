"""The services a chaos run breaks: the 3-node Kafka cluster and private Postgres, S3 and Azure.

Other engineers run tests on the shared single-node stack at the same time, so a chaos run
never stops a shared service: its Kafka is the 3-node cluster (``stack/up.sh kafka3``) and
its Postgres, SeaweedFS and Azurite are second instances the stack scripts start on other
ports with their data under ``.stack/chaos/`` (``STACK_PG_*``, ``STACK_S3_*``, ``STACK_AZ_*``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.config import admin_config
from engine.settings import Settings, get_settings

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "stack"
CHAOS_DIR = REPO / ".stack" / "chaos"

# Every port here, like every port in stack/lib/ports.sh, lies below the kernel's ephemeral
# range (32768-60999 on Linux): a server port inside it can be held by any outbound
# connection of a parallel test when the server starts. tests/test_stack_ports.py checks.
# The 3-node cluster's brokers (stack/lib/ports.sh KAFKA3_PORTS; that test keeps them equal).
KAFKA3_PORTS = (21092, 22092, 23092)
KAFKA3_BOOTSTRAP = ",".join(f"127.0.0.1:{p}" for p in KAFKA3_PORTS)
PG_PORT, S3_PORT, AZ_PORT = 15433, 18433, 10100
# weed mini's master, volume, filer and admin ports (their gRPC ports are these + 10000,
# S3's too): clear of the shared instance's and of the 3-node cluster's.
S3_INTERNAL_PORTS = "19433 19440 18988 9746"
AZURITE_BLOB_ENDPOINT = f"http://127.0.0.1:{AZ_PORT}/devstoreaccount1"
# Azurite's well-known development account key (public, in Microsoft's documentation).
AZURITE_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


# How long a broker that came back may take to catch up: every partition's replicas in
# sync again (ISR = replicas), the internal topics' included.
IN_SYNC_TIMEOUT_S = 120.0
# The stack scripts' bounds on a service's start, for the instances a run starts and
# restarts (their own defaults: 90 s for a Kafka node, 60 s for the others). Each wait
# ends as soon as the service answers; the bound only decides when a start has failed,
# and a node killed -9 on a loaded machine first recovers every partition it holds (a
# JVM start alone took 27 s at a load of 20): 90 s was seen to run out.
START_TIMEOUTS_S = {
    "KAFKA_START_TIMEOUT": 300,
    "PG_START_TIMEOUT": 180,
    "S3_START_TIMEOUT": 180,
    "AZ_START_TIMEOUT": 180,
}
# Every topic a run creates is named leadflow.chaos-<run>.* (its flow id is chaos-<run>).
RUN_TOPICS_PREFIX = "leadflow.chaos-"


class ServiceError(RuntimeError):
    """A stack script failed: its output is in the message."""


def out_of_sync(admin: AdminClient) -> list[str]:
    """Partitions of the 3-node cluster without a leader or with a replica out of sync."""
    topics = admin.list_topics(timeout=10).topics
    return sorted(
        f"{name}[{part.id}]"
        for name, topic in topics.items()
        for part in topic.partitions.values()
        if part.leader < 0 or set(part.isrs) != set(part.replicas)
    )


def wait_in_sync(timeout: float = IN_SYNC_TIMEOUT_S) -> list[str]:
    """Wait until every partition of the cluster has a leader and all its replicas in sync;
    the partitions still lagging when ``timeout`` ran out (empty: all in sync).

    ``kafka-node.sh start`` returns once the broker is registered and unfenced, while its
    replicas are still catching up: until they have, each of its partitions hangs on the
    two other brokers (min ISR 2), and the next fault to take one down stalls writes.
    Waiting for the cluster to be whole again keeps faults from compounding by chance."""
    admin = AdminClient(admin_config(cluster_settings()))
    deadline = time.monotonic() + timeout
    lagging = ["(no metadata yet)"]
    while time.monotonic() < deadline:
        try:
            lagging = out_of_sync(admin)
        except Exception as exc:  # metadata not answered yet: ask again
            lagging = [f"(metadata: {exc})"]
        if not lagging:
            return []
        time.sleep(1)
    log.warning("replicas still out of sync", partitions=lagging[:10], count=len(lagging))
    return lagging


def cluster_settings() -> Settings:
    """The settings with the 3-node cluster as bootstrap: the harness's own admin clients
    connect the way its workers do (the Kafka kit's configuration, transport included)."""
    return get_settings().model_copy(update={"kafka_bootstrap_servers": KAFKA3_BOOTSTRAP})


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def private_env() -> dict[str, str]:
    """What the stack scripts need to act on the private instances instead of the shared ones."""
    logs = CHAOS_DIR / "logs"
    return {
        "STACK_PG_PORT": str(PG_PORT),
        "STACK_PG_DIR": str(CHAOS_DIR / "postgres"),
        "STACK_PG_LOG": str(logs / "postgres.log"),
        "STACK_S3_PORT": str(S3_PORT),
        "STACK_S3_INTERNAL_PORTS": S3_INTERNAL_PORTS,
        "STACK_S3_DIR": str(CHAOS_DIR / "s3"),
        "STACK_S3_LOG": str(logs / "s3.log"),
        "STACK_AZ_PORT": str(AZ_PORT),
        "STACK_AZ_DIR": str(CHAOS_DIR / "azurite"),
        "STACK_AZ_LOG": str(logs / "azurite.log"),
    }


def worker_env() -> dict[str, str]:
    """The application settings (``engine.settings``) pointing at the chaos services."""
    azure = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_DEV_KEY};BlobEndpoint={AZURITE_BLOB_ENDPOINT};"
    )
    return {
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA3_BOOTSTRAP,
        "DATABASE_URL": f"postgresql://leadflow:leadflow@127.0.0.1:{PG_PORT}/leadflow",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{S3_PORT}",
        "AZURE_STORAGE_CONNECTION_STRING": azure,
    }


def drop_topics(prefix: str, timeout: float = 60) -> list[str]:
    """Delete the 3-node cluster's topics whose names start with ``prefix``; their names.

    Each run creates its own topics (seven, 21 partitions) and nothing removed them: after
    35 runs the cluster held 360 partitions, and a broker killed -9 recovers every one it
    holds before it answers, which took a restart past its 90 s bound on a loaded machine.
    A run drops its own topics when it ends and any a crashed run left when it starts."""
    admin = AdminClient(admin_config(cluster_settings()))
    names = sorted(t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix))
    if not names:
        return []
    for name, future in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # gone already
                log.warning("topic not deleted", topic=name, error=str(exc))
    log.info("topics dropped", prefix=prefix, count=len(names))
    return names


def _script(*args: str, timeout: float = 900) -> str:
    (CHAOS_DIR / "logs").mkdir(parents=True, exist_ok=True)
    bounds = {name: str(s) for name, s in START_TIMEOUTS_S.items()}
    env = {**bounds, **os.environ, **private_env()}
    done = subprocess.run(  # noqa: S603 - our own stack scripts, fixed arguments
        ["bash", *args],  # noqa: S607
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        # The script's own "[stack] ERROR: ..." line first: the log tail after it is long.
        said = [line for line in done.stderr.splitlines() if "ERROR" in line][:3]
        raise ServiceError(
            f"{' '.join(args)} failed ({done.returncode}): {' / '.join(said)}\n"
            f"{done.stderr[-1500:]}"
        )
    return done.stdout


@dataclass
class ChaosServices:
    """Starts what a run needs, breaks it on demand, and stops what it started."""

    started_kafka3: bool = False
    nodes_down: set[int] = field(default_factory=set)

    def up(self) -> None:
        if not all(port_open(p) for p in KAFKA3_PORTS):
            self.started_kafka3 = True
        _script("stack/up.sh", "kafka3", "postgres", "s3", "azure")

    def down(self, keep_kafka3: bool = False) -> None:
        """Private instances always; the cluster only if this run started it."""
        for node in sorted(self.nodes_down):
            self.start_broker(node)
        _script("stack/down.sh", "postgres", "s3", "azure")
        if self.started_kafka3 and not keep_kafka3:
            _script("stack/down.sh", "kafka3")

    def kill_broker(self, node: int) -> None:
        _script("stack/kafka-node.sh", "kill", str(node))
        self.nodes_down.add(node)

    def start_broker(self, node: int) -> list[str]:
        """Start a node again; the partitions still out of sync after the wait for them."""
        _script("stack/kafka-node.sh", "start", str(node))
        self.nodes_down.discard(node)
        return wait_in_sync()

    def restart_broker(self, node: int) -> list[str]:
        """A controlled restart (SIGTERM, then start and wait until back in the cluster and
        in sync); the partitions still out of sync after the wait for them."""
        self.nodes_down.add(node)
        _script("stack/kafka-node.sh", "restart", str(node))
        self.nodes_down.discard(node)
        return wait_in_sync()

    def stop(self, *services: str) -> None:
        _script("stack/down.sh", *services)

    def start(self, *services: str) -> None:
        _script("stack/up.sh", *services)
