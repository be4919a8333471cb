"""Checking a source's credentials: an API key header, or basic auth with the key as password.

The expected key is read where the flow says it lives (an environment
variable or a file) when a request comes, so rotating it needs no restart;
the stored value is the key or ``sha256:<hex>`` of it. Comparisons are
constant-time. Nothing here logs or returns a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from engine.errors import ConfigError
from engine.intake.config import IntakeAuth


class CredentialsUnavailableError(ConfigError):
    """The place the flow names holds no key: the source cannot be authenticated."""


def expected_key(auth: IntakeAuth) -> str:
    if auth.key_env is not None:
        value = os.environ.get(auth.key_env)
        where = f"environment variable {auth.key_env}"
    else:
        assert auth.key_file is not None
        where = f"file {auth.key_file}"
        try:
            value = auth.key_file.read_text(encoding="utf-8").strip()
        except OSError:
            value = None
    if not value:
        raise CredentialsUnavailableError(f"no API key in {where}")
    return value


def presented_key(headers: Mapping[str, str], auth: IntakeAuth) -> str | None:
    """The key the request carries: the configured header, else basic auth's password."""
    key = headers.get(auth.header.lower())
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None


def key_matches(presented: str, expected: str) -> bool:
    if expected.startswith("sha256:"):
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return hmac.compare_digest(digest, expected.removeprefix("sha256:").lower())
    return hmac.compare_digest(presented.encode(), expected.encode())


def authenticated(headers: Mapping[str, str], auth: IntakeAuth) -> bool:
    """True when the request carries the source's key. ``headers`` have lower-case names.
    Raises ``CredentialsUnavailableError`` when the key's place is empty."""
    expected = expected_key(auth)
    presented = presented_key(headers, auth)
    return presented is not None and key_matches(presented, expected)
