"""The SASL_SSL broker of the transport tests: a second single-node Kafka
(``stack/kafka-secure.sh``), started once per session with a CA, certificate and SCRAM
passwords made for it, and stopped afterwards. A fixture module, imported by the tests
that use it (not a conftest: only they should start a broker)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECURE_BOOTSTRAP = "127.0.0.1:19094"  # KAFKA_SECURE_PORT in stack/lib/ports.sh


@dataclass(frozen=True)
class SecureKafka:
    """Where the broker is and what a client needs: the CA and the password file."""

    directory: Path
    ca: Path
    password_file: Path

    def env(self) -> dict[str, str]:
        """The settings' variables for a client of this broker."""
        return {
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": SECURE_BOOTSTRAP,
            "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LEADFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "LEADFLOW_KAFKA_SASL_USERNAME": "leadflow",
            "LEADFLOW_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "LEADFLOW_KAFKA_SSL_CA_LOCATION": str(self.ca),
        }

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": SECURE_BOOTSTRAP,
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": "leadflow",
                "kafka_sasl_password_file": self.password_file,
                "kafka_ssl_ca_location": self.ca,
            }
        )


def _script(action: str, directory: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "stack" / "kafka-secure.sh"), action, str(directory)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0:
        pytest.fail(f"stack/kafka-secure.sh {action} failed:\n{done.stdout}{done.stderr}")


# Per test, not per session: one test uses it, and the broker (half a GB of heap) should not
# outlive that test in a worker that goes on with others.
@pytest.fixture(name="secure_kafka")
def secure_kafka_fixture(stack: Settings, tmp_path: Path) -> Iterator[SecureKafka]:
    """The SASL_SSL broker, for one test (its certificates and passwords die with it).
    Requires the stack marker: the test needs the shared Postgres as well."""
    directory = tmp_path / "kafka-secure"
    _script("start", directory)
    try:
        yield SecureKafka(directory, directory / "tls" / "ca.pem", directory / "client.password")
    finally:
        _script("stop", directory)
