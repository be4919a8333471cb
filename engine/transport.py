"""TLS and credentials for the connections leadflow opens: Kafka (SASL, TLS), Postgres
(``sslmode`` and its files) and the API's HTTPS, checked from the settings in one place.

A misconfiguration is one ``ConfigError`` line naming the setting (a file that is not
there, a SASL mechanism without credentials) before anything connects, never a driver's
stack trace. The Kafka password is read by reference (``SecretRef``: an environment
variable or a file) each time a client is built, so it never sits in the settings, and no
error here quotes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from engine.destinations import SecretRef
from engine.errors import ConfigError
from engine.settings import Settings

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def readable_file(path: Path, setting: str) -> str:
    """``path`` as a string if it is a file this process can read; ``ConfigError`` if not."""
    if not path.is_file():
        raise ConfigError(f"{setting}: no such file {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{setting}: {path} is not readable")
    return str(path)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The checked Kafka transport settings, as librdkafka wants them (``config`` adds them
    to every client). ``password`` is a ``SecretStr``: its repr shows no secret."""

    protocol: str
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    verify_hostname: bool = True


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The Kafka transport the settings ask for, checked; ``ConfigError`` in one line if the
    combination cannot work (or would send a password in clear text unasked)."""
    protocol = settings.kafka_security_protocol
    tls, sasl = protocol in _TLS_PROTOCOLS, protocol in _SASL_PROTOCOLS
    tls_files = {
        "LEADFLOW_KAFKA_SSL_CA_LOCATION": settings.kafka_ssl_ca_location,
        "LEADFLOW_KAFKA_SSL_CERTIFICATE_LOCATION": settings.kafka_ssl_certificate_location,
        "LEADFLOW_KAFKA_SSL_KEY_LOCATION": settings.kafka_ssl_key_location,
    }
    sasl_given = {
        "LEADFLOW_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "LEADFLOW_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "LEADFLOW_KAFKA_SASL_PASSWORD_ENV": settings.kafka_sasl_password_env,
        "LEADFLOW_KAFKA_SASL_PASSWORD_FILE": settings.kafka_sasl_password_file,
    }
    # A setting the protocol ignores is a trap: the operator believes the link is secured.
    if not tls and (unused := [name for name, v in tls_files.items() if v is not None]):
        raise ConfigError(
            f"{', '.join(unused)} set but LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS"
        )
    if not sasl and (unused := [name for name, v in sasl_given.items() if v is not None]):
        raise ConfigError(
            f"{', '.join(unused)} set but LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL"
        )
    if (settings.kafka_ssl_certificate_location is None) != (
        settings.kafka_ssl_key_location is None
    ):
        raise ConfigError(
            "LEADFLOW_KAFKA_SSL_CERTIFICATE_LOCATION and LEADFLOW_KAFKA_SSL_KEY_LOCATION "
            "go together"
        )
    files = {name: readable_file(path, name) for name, path in tls_files.items() if path}
    security = KafkaSecurity(
        protocol=protocol,
        ca_location=files.get("LEADFLOW_KAFKA_SSL_CA_LOCATION"),
        certificate_location=files.get("LEADFLOW_KAFKA_SSL_CERTIFICATE_LOCATION"),
        key_location=files.get("LEADFLOW_KAFKA_SSL_KEY_LOCATION"),
        verify_hostname=settings.kafka_ssl_verify_hostname,
    )
    if not sasl:
        return security
    mechanism, username = settings.kafka_sasl_mechanism, settings.kafka_sasl_username
    if mechanism is None or not username:
        raise ConfigError(
            f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs LEADFLOW_KAFKA_SASL_MECHANISM "
            "and LEADFLOW_KAFKA_SASL_USERNAME"
        )
    if mechanism == "PLAIN" and not tls and not settings.kafka_allow_plain_without_tls:
        raise ConfigError(
            "LEADFLOW_KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password in clear "
            "text: use SASL_SSL, or set LEADFLOW_KAFKA_ALLOW_PLAIN_WITHOUT_TLS=true"
        )
    env, file = settings.kafka_sasl_password_env, settings.kafka_sasl_password_file
    if (env is None) == (file is None):
        raise ConfigError(
            f"LEADFLOW_KAFKA_SASL_MECHANISM={mechanism} needs exactly one of "
            "LEADFLOW_KAFKA_SASL_PASSWORD_ENV or LEADFLOW_KAFKA_SASL_PASSWORD_FILE"
        )
    reference = SecretRef(env=env, file=str(file) if file is not None else None)
    try:
        password = reference.resolve()
    except ConfigError as exc:
        raise ConfigError(f"Kafka SASL password: {exc}") from None
    return replace(security, mechanism=mechanism, username=username, password=password)


def postgres_tls(settings: Settings) -> dict[str, Any]:
    """libpq connection parameters for TLS, for every connection the engine opens (passed as
    keywords, they win over the same parameters in ``DATABASE_URL``); empty when unset, so a
    URL's own ``?sslmode=`` and libpq's ``PGSSLMODE`` keep working as before."""
    params: dict[str, Any] = {}  # Any: psycopg.connect's keywords are typed one by one
    if settings.db_sslmode is not None:
        params["sslmode"] = settings.db_sslmode
    files = {
        "sslrootcert": ("LEADFLOW_DB_SSLROOTCERT", settings.db_sslrootcert),
        "sslcert": ("LEADFLOW_DB_SSLCERT", settings.db_sslcert),
        "sslkey": ("LEADFLOW_DB_SSLKEY", settings.db_sslkey),
    }
    if (settings.db_sslcert is None) != (settings.db_sslkey is None):
        raise ConfigError("LEADFLOW_DB_SSLCERT and LEADFLOW_DB_SSLKEY go together")
    for param, (name, path) in files.items():
        if path is not None:
            params[param] = readable_file(path, name)
    return params


def serve_tls(
    settings: Settings, cert: Path | None = None, key: Path | None = None
) -> tuple[str, str] | None:
    """The certificate and key files ``leadflow serve`` answers HTTPS with (the command's
    options over the settings), or None for plain HTTP; ``ConfigError`` for one without the
    other or a file that is not there."""
    cert = cert or settings.serve_tls_cert
    key = key or settings.serve_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("HTTPS needs both a certificate and a key (--tls-cert and --tls-key)")
    return readable_file(cert, "--tls-cert"), readable_file(key, "--tls-key")
