"""The shape of a stored API key and its keyed hash.

A key is ``lf_<key_id>_<secret>``: the id finds the row in one indexed read, the
secret (256 random bits) is what proves the holder. Keys are random, not chosen
by people, so a slow password hash (argon2) would add latency to every request
and no strength; an HMAC with a deployment secret (the pepper) means a copy of
the table alone cannot even confirm a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_KEY = re.compile(r"^lf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"lf_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key id a presented key names, or None if it is not a stored key's shape."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def digest(pepper: str, key: str) -> bytes:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).digest()
