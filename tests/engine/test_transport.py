"""Transport settings: Kafka TLS and SASL for every client, Postgres TLS for every connection,
HTTPS for ``leadflow serve``; each misconfiguration refused in one line, no secret quoted.

The SASL_SSL broker itself is in ``tests/security/test_transport.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import cli
from engine.errors import ConfigError
from engine.runtime.kafka.config import (
    admin_config,
    connection_config,
    consumer_config,
    producer_config,
    transactional_producer_config,
)
from engine.settings import Settings
from engine.transport import kafka_security, postgres_tls, serve_tls

PASSWORD = "s3cr3t-kafka-password"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file standing for a PEM certificate: the checks are about presence, not content."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    return path


@pytest.fixture
def sasl_ssl(monkeypatch: pytest.MonkeyPatch, pem: Path) -> Settings:
    monkeypatch.setenv("TEST_KAFKA_PASSWORD", PASSWORD)
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="leadflow",
        kafka_sasl_password_env="TEST_KAFKA_PASSWORD",
        kafka_ssl_ca_location=pem,
    )


def refusal(settings: Settings) -> str:
    with pytest.raises(ConfigError) as exc:
        connection_config(settings)
    message = str(exc.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


# -- Kafka ------------------------------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_no_tls_or_sasl_keys() -> None:
    config = connection_config(Settings())
    assert config["security.protocol"] == "plaintext"
    assert not [key for key in config if key.startswith(("ssl.", "sasl."))]


def test_sasl_ssl_gives_librdkafka_its_own_keys(sasl_ssl: Settings, pem: Path) -> None:
    config = connection_config(sasl_ssl)
    assert {k: v for k, v in config.items() if k != "bootstrap.servers"} == {
        "security.protocol": "sasl_ssl",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(pem),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "leadflow",
        "sasl.password": PASSWORD,
    }


def test_every_client_configuration_carries_the_transport(sasl_ssl: Settings) -> None:
    configs: list[dict[str, Any]] = [
        consumer_config(sasl_ssl, "g"),
        producer_config(sasl_ssl),
        transactional_producer_config(sasl_ssl, "t"),
        admin_config(sasl_ssl),
    ]
    for config in configs:
        assert config["security.protocol"] == "sasl_ssl"
        assert config["sasl.password"] == PASSWORD


def test_the_password_is_read_from_a_file(tmp_path: Path, pem: Path) -> None:
    secret = tmp_path / "kafka.password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="leadflow",
        kafka_sasl_password_file=secret,
    )
    assert connection_config(settings)["sasl.password"] == PASSWORD


def test_the_password_is_never_in_the_settings_nor_the_checked_transport(
    sasl_ssl: Settings,
) -> None:
    security = kafka_security(sasl_ssl)
    for text in (repr(sasl_ssl), sasl_ssl.model_dump_json(), repr(security), str(security)):
        assert PASSWORD not in text


def test_environment_variables_name_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pem: Path
) -> None:
    secret = tmp_path / "kafka.password"
    secret.write_text(PASSWORD, encoding="utf-8")
    for name, value in {
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LEADFLOW_KAFKA_SASL_USERNAME": "leadflow",
        "LEADFLOW_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "LEADFLOW_KAFKA_SSL_CA_LOCATION": str(pem),
        "LEADFLOW_KAFKA_SSL_VERIFY_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(name, value)
    config = connection_config(Settings())
    assert config["sasl.password"] == PASSWORD
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_a_mechanism_without_credentials_is_refused(pem: Path) -> None:
    message = refusal(
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512")
    )
    assert "LEADFLOW_KAFKA_SASL_USERNAME" in message
    message = refusal(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="leadflow",
        )
    )
    assert "LEADFLOW_KAFKA_SASL_PASSWORD_ENV" in message


def test_sasl_settings_without_a_sasl_protocol_are_refused() -> None:
    message = refusal(Settings(kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u"))
    assert "uses no SASL" in message


def test_an_unset_password_variable_or_a_missing_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TEST_KAFKA_PASSWORD", raising=False)
    base = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "leadflow",
    }
    assert "TEST_KAFKA_PASSWORD" in refusal(
        Settings(**base, kafka_sasl_password_env="TEST_KAFKA_PASSWORD")
    )
    missing = tmp_path / "nope.password"
    assert str(missing) in refusal(Settings(**base, kafka_sasl_password_file=missing))


def test_plain_without_tls_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KAFKA_PASSWORD", PASSWORD)
    base: dict[str, Any] = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "leadflow",
        "kafka_sasl_password_env": "TEST_KAFKA_PASSWORD",
    }
    assert "clear text" in refusal(Settings(**base))
    config = connection_config(Settings(**base, kafka_allow_plain_without_tls=True))
    assert config["sasl.mechanism"] == "PLAIN"
    tls = connection_config(Settings(**{**base, "kafka_security_protocol": "SASL_SSL"}))
    assert tls["security.protocol"] == "sasl_ssl"


def test_a_missing_ca_file_is_refused(tmp_path: Path) -> None:
    message = refusal(
        Settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=tmp_path / "ca.pem")
    )
    assert message.startswith("LEADFLOW_KAFKA_SSL_CA_LOCATION: no such file")


def test_tls_files_without_tls_are_refused(pem: Path) -> None:
    assert "uses no TLS" in refusal(Settings(kafka_ssl_ca_location=pem))


def test_a_client_certificate_needs_its_key(pem: Path) -> None:
    message = refusal(Settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location=pem))
    assert "go together" in message
    config = connection_config(
        Settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certificate_location=pem,
            kafka_ssl_key_location=pem,
        )
    )
    assert config["ssl.certificate.location"] == config["ssl.key.location"] == str(pem)


# -- Postgres ---------------------------------------------------------------------------------


def test_postgres_adds_nothing_by_default_so_the_url_keeps_its_own_parameters() -> None:
    assert postgres_tls(Settings()) == {}


def test_postgres_tls_parameters(pem: Path) -> None:
    settings = Settings(db_sslmode="verify-full", db_sslrootcert=pem, db_sslcert=pem, db_sslkey=pem)
    assert postgres_tls(settings) == {
        "sslmode": "verify-full",
        "sslrootcert": str(pem),
        "sslcert": str(pem),
        "sslkey": str(pem),
    }


def test_postgres_refusals(tmp_path: Path, pem: Path) -> None:
    with pytest.raises(ConfigError, match="LEADFLOW_DB_SSLROOTCERT: no such file"):
        postgres_tls(Settings(db_sslmode="verify-ca", db_sslrootcert=tmp_path / "root.crt"))
    with pytest.raises(ConfigError, match="go together"):
        postgres_tls(Settings(db_sslcert=pem))


def test_every_engine_connection_takes_the_postgres_tls_parameters(
    monkeypatch: pytest.MonkeyPatch, pem: Path
) -> None:
    """The state store's and the projections' connections, and the intake pool."""
    import psycopg

    from engine.api.intake_store import IntakeStore
    from engine.state import postgres as state_postgres
    from projectors import store as projector_store

    seen: list[dict[str, Any]] = []

    def connect(conninfo: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise psycopg.OperationalError("not connecting in a unit test")

    monkeypatch.setattr(psycopg, "connect", connect)
    settings = Settings(db_sslmode="verify-full", db_sslrootcert=pem)
    with pytest.raises(Exception, match="not connecting"):
        state_postgres.connect(settings)
    with pytest.raises(Exception, match="not connecting"):
        projector_store.connect(settings)
    pool = IntakeStore(settings)._pool
    assert [kw["sslmode"] for kw in [*seen, pool.kwargs]] == ["verify-full"] * 3
    assert {kw["sslrootcert"] for kw in [*seen, pool.kwargs]} == {str(pem)}


# -- HTTPS for leadflow serve -----------------------------------------------------------------


def test_serve_tls_needs_both_files(tmp_path: Path, pem: Path) -> None:
    assert serve_tls(Settings()) is None
    assert serve_tls(Settings(), pem, pem) == (str(pem), str(pem))
    assert serve_tls(Settings(serve_tls_cert=pem, serve_tls_key=pem)) == (str(pem), str(pem))
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        serve_tls(Settings(), pem, None)
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        serve_tls(Settings(serve_tls_key=pem))
    with pytest.raises(ConfigError, match="--tls-key: no such file"):
        serve_tls(Settings(), pem, tmp_path / "key.pem")


def test_serve_hands_the_certificate_to_uvicorn(monkeypatch: pytest.MonkeyPatch, pem: Path) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli.uvicorn, "run", lambda *_, **kw: calls.append(kw))
    monkeypatch.setattr(cli, "get_settings", Settings)
    result = CliRunner().invoke(cli.app, ["serve", "--tls-cert", str(pem), "--tls-key", str(pem)])
    assert result.exit_code == 0, result.output
    assert (calls[0]["ssl_certfile"], calls[0]["ssl_keyfile"]) == (str(pem), str(pem))


def test_serve_refuses_a_certificate_without_its_key_in_one_line(pem: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--tls-cert", str(pem)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: HTTPS needs both a certificate and a key (--tls-cert and --tls-key)"]


def test_a_command_refuses_a_missing_password_file_before_connecting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.password"
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LEADFLOW_KAFKA_SASL_USERNAME": "leadflow",
        "LEADFLOW_KAFKA_SASL_PASSWORD_FILE": str(missing),
    }
    done = subprocess.run(
        [sys.executable, "-m", "engine", "flow", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: Kafka SASL password: secret file {missing} cannot be read: "
        "No such file or directory"
    ]


def test_protocol_and_mechanism_take_librdkafka_lower_case_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("LEADFLOW_KAFKA_SASL_MECHANISM", "scram-sha-512")
    settings = Settings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    )


def test_an_unknown_protocol_is_one_line_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "flow", "list"],
        env={**os.environ, "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid settings: LEADFLOW_KAFKA_SECURITY_PROTOCOL: Input should be "
        "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"
    ]
