"""Read-side API keys for the operator UI: who may read, and whether they see PII.

Keys are configured by reference (``Settings.ui_keys``) and read at each request,
so a rotated file or variable takes effect without a restart. The key arrives
only as ``Authorization: Bearer <key>``: never in a URL, where proxies and
access logs would keep it. A stored value may be the key itself or
``sha256:<hex>`` of it; either way the comparison is of digests, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request

from engine.settings import Settings, UiKey, UiScope

log = structlog.get_logger(__name__)

_SHA256 = "sha256:"


@dataclass(frozen=True, slots=True)
class Reader:
    """The holder of a valid key: its configured name and scopes."""

    name: str
    scopes: frozenset[UiScope]

    @property
    def sees_pii(self) -> bool:
        return "pii" in self.scopes


def _stored_digest(key: UiKey) -> bytes | None:
    """The sha256 digest the key's holder must present, or None when it is not readable."""
    try:
        if key.key_env is not None:
            value = os.environ.get(key.key_env, "").strip()
        else:
            assert key.key_file is not None
            value = key.key_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not value:
        return None
    if value.startswith(_SHA256):
        try:
            return bytes.fromhex(value[len(_SHA256) :])
        except ValueError:
            log.warning("ui_key_unreadable", key=key.name, why="sha256 value is not hex")
            return None
    return hashlib.sha256(value.encode()).digest()


def authenticate(keys: tuple[UiKey, ...], presented: str) -> Reader | None:
    """The reader whose key is ``presented``; every configured key is compared."""
    digest = hashlib.sha256(presented.encode()).digest()
    found: Reader | None = None
    for key in keys:
        stored = _stored_digest(key)
        # No early exit: the time taken does not tell which key (if any) matched.
        if stored is not None and hmac.compare_digest(stored, digest) and found is None:
            found = Reader(key.name, frozenset(key.scopes))
    return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def require_reader(request: Request) -> Reader:
    """Route dependency: the request's reader, or a 401 that says what is wrong (not which key)."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _unauthorized("Send the UI API key as 'Authorization: Bearer <key>'")
    settings: Settings = request.app.state.settings
    reader = authenticate(settings.ui_keys, presented.strip())
    if reader is None or "read" not in reader.scopes:
        raise _unauthorized("Unknown API key, or a key without the read scope")
    return reader


ReaderDep = Annotated[Reader, Depends(require_reader)]


def ensure_key_file(settings: Settings) -> Path | None:
    """The first file-kept UI key, created with a random key (mode 0600) if missing: what
    ``leadflow demo`` points the operator at. None when no key is kept in a file."""
    path = next((k.key_file for k in settings.ui_keys if k.key_file is not None), None)
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path
