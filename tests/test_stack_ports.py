"""Every port the local stack and the chaos harness listen on lies outside the kernel's
ephemeral port range, SeaweedFS's derived gRPC ports included.

A server port inside that range can be held by any outbound connection of a test running in
parallel at the moment the server starts: the 3-node cluster once failed to start with
"Socket server failed to bind to 127.0.0.1:39092: Address already in use". No services are
needed: the ports are what the stack scripts themselves compute (bash sources them), with
and without the chaos harness's overrides.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from chaos import services

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "stack"
# Linux's default net.ipv4.ip_local_port_range; this machine's own range is checked as well.
LINUX_EPHEMERAL = range(32768, 60999 + 1)
# weed serves gRPC on each HTTP port + 10000 (master, volume, filer, admin, S3).
SEAWEED_GRPC_OFFSET = 10000

# What each stack module ends up listening on, printed by bash after sourcing the modules.
_EFFECTIVE_PORTS = r"""
source stack/lib/common.sh
source stack/lib/kafka.sh
source stack/lib/postgres.sh
source stack/lib/s3.sh
source stack/lib/azurite.sh
source stack/lib/registry.sh
echo "kafka $KAFKA_PORT $KAFKA_CTL_PORT"
for n in 1 2 3; do echo "kafka3 $(kafka_port cluster "$n") $(kafka_ctl_port cluster "$n")"; done
echo "kafka_secure $KAFKA_SECURE_PORT $KAFKA_SECURE_CTL_PORT"
echo "postgres $PG_PORT"
echo "seaweedfs $S3_PORT $S3_MASTER_PORT $S3_VOLUME_PORT $S3_FILER_PORT $S3_ADMIN_PORT"
echo "azurite $AZ_PORT"
echo "registry $REGISTRY_PORT $REGISTRY_MGMT_PORT"
"""


def ephemeral_ranges() -> list[range]:
    ranges = [LINUX_EPHEMERAL]
    proc = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if proc.exists():
        low, high = (int(n) for n in proc.read_text().split())
        ranges.append(range(low, high + 1))
    return ranges


def stack_ports(env: dict[str, str] | None = None) -> dict[str, list[int]]:
    """Service -> the ports the stack scripts bind for it (SeaweedFS's gRPC ports added)."""
    done = subprocess.run(
        ["bash", "-c", _EFFECTIVE_PORTS],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, list[int]] = {}
    for line in done.stdout.splitlines():
        name, *ports = line.split()
        out.setdefault(name, []).extend(int(p) for p in ports)
    out["seaweedfs"] += [p + SEAWEED_GRPC_OFFSET for p in out["seaweedfs"]]
    return out


def in_ephemeral_range(ports: dict[str, list[int]]) -> dict[str, list[int]]:
    ranges = ephemeral_ranges()
    bad = {name: [p for p in ps if any(p in r for r in ranges)] for name, ps in ports.items()}
    return {name: ps for name, ps in bad.items() if ps}


def test_the_shared_stack_binds_no_port_in_the_ephemeral_range() -> None:
    ports = stack_ports()
    assert in_ephemeral_range(ports) == {}
    # The well-known ports the application's defaults and compose.yaml name stay as they are.
    assert ports["kafka"] == [9092, 9093]
    assert ports["postgres"] == [5433]
    assert ports["seaweedfs"][0] == 8333
    assert ports["azurite"] == [10000]
    assert ports["registry"] == [8085, 9085]


def test_the_chaos_harness_private_instances_bind_no_port_in_the_ephemeral_range() -> None:
    ports = stack_ports(services.private_env())
    # shared services: the harness never starts them
    del ports["kafka"], ports["kafka_secure"], ports["registry"]
    assert in_ephemeral_range(ports) == {}
    assert ports["postgres"] == [services.PG_PORT]
    assert ports["azurite"] == [services.AZ_PORT]


def test_the_harness_talks_to_the_ports_the_3_node_cluster_listens_on() -> None:
    brokers = [broker for broker, _ in zip(*[iter(stack_ports()["kafka3"])] * 2, strict=True)]
    assert list(services.KAFKA3_PORTS) == brokers


def test_the_sasl_ssl_node_has_ports_of_its_own_that_the_tests_and_the_guard_know() -> None:
    from tests.security.secure_kafka import SECURE_BOOTSTRAP
    from tests.service_guard import STACK_PORTS

    ports = stack_ports()
    port, controller = ports["kafka_secure"]
    assert f"127.0.0.1:{port}" == SECURE_BOOTSTRAP
    assert {STACK_PORTS.get(port), STACK_PORTS.get(controller)} == {"kafka"}
    others = [p for name, ps in ports.items() if name != "kafka_secure" for p in ps]
    assert not {port, controller} & set(others)


def test_the_shared_stack_and_the_chaos_instances_never_share_a_port() -> None:
    shared = [p for ps in stack_ports().values() for p in ps]
    private = [
        p
        for name, ps in stack_ports(services.private_env()).items()
        # the same nodes either way (the harness starts no registry of its own)
        if name not in ("kafka", "kafka3", "kafka_secure", "registry")
        for p in ps
    ]
    every = shared + private
    assert sorted(p for p in set(every) if every.count(p) > 1) == []


# A port written out where one is configured: "127.0.0.1:N", "port=N", "-s3.port=N",
# "PORT:-N", "_PORT = N", compose's "HOST:N:M".
_LITERAL_PORT = re.compile(
    r"(?:(?:127\.0\.0\.1|localhost|0\.0\.0\.0):|port[\w.]*[\"']?\s*(?:=|:-?)\s*[\"']?)(\d{4,5})",
    re.IGNORECASE,
)


@pytest.mark.parametrize(
    "path",
    sorted(
        [
            *(p for p in STACK.rglob("*") if p.suffix in (".sh", ".py", ".conf", ".yaml")),
            *(REPO / "chaos").glob("*.py"),
            REPO / "compose.yaml",
        ]
    ),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_script_writes_out_a_port_in_the_ephemeral_range(path: Path) -> None:
    ranges = ephemeral_ranges()
    text = path.read_text(encoding="utf-8")
    found = [int(m) for m in _LITERAL_PORT.findall(text)]
    assert [p for p in found if any(p in r for r in ranges)] == []


def test_the_literal_port_scan_sees_the_ports_it_must_refuse() -> None:
    # The scan above proves nothing if its pattern misses how ports are written here.
    samples = (
        "listeners=PLAINTEXT://127.0.0.1:39092",
        "PG_PORT=${STACK_PG_PORT:-55433}",
        "PG_PORT, S3_PORT = 55433, 1",
        "-admin.port=33646",
        '      - "127.0.0.1:40000:40000"',
    )
    assert [int(_LITERAL_PORT.findall(s)[0]) for s in samples] == [
        39092,
        55433,
        55433,
        33646,
        40000,
    ]
