"""A service's credentials, read from where the flow says they are, when a call is sent.

A flow names the secret (``CallAuth``: an environment variable or a file), never holds
it; the runner reads it for each call (so a rotated file is used at once) and adds the
header to the request on the wire only. The request an event records is the step's
``Delivery``, which never had it, and an answer that echoes the secret back has it
replaced before anyone records it.
"""

from __future__ import annotations

import base64
import os

from engine.steps.calls import CallAuth

MASK = "[masked]"


class CredentialError(Exception):
    """The secret a flow names is not there: said by name, never by value."""


def read_secret(auth: CallAuth) -> str:
    if auth.secret_env is not None:
        value = os.environ.get(auth.secret_env)
        if not value:
            raise CredentialError(f"environment variable {auth.secret_env} is not set")
        return value
    assert auth.secret_file is not None
    try:
        value = auth.secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CredentialError(f"secret file {auth.secret_file} is not readable") from exc
    if not value:
        raise CredentialError(f"secret file {auth.secret_file} is empty")
    return value


def credential_headers(auth: CallAuth) -> tuple[dict[str, str], list[str]]:
    """The headers to send, and the strings an answer must not show (the secret, and the
    encoded form sent)."""
    secret = read_secret(auth)
    if auth.kind == "bearer":
        return {"Authorization": f"Bearer {secret}"}, [secret]
    if auth.kind == "basic":
        token = base64.b64encode(f"{auth.username}:{secret}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}, [secret, token]
    return {auth.header: secret}, [secret]


def masked(text: bytes, secrets: list[str]) -> bytes:
    for secret in secrets:
        text = text.replace(secret.encode(), MASK.encode())
    return text
