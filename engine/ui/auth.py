"""The demo's operator key: a file-kept key (``Settings.ui_keys``) made on first use.

Who may read what is decided by ``engine.access`` for the UI as for every other
route; this module only creates the local key file that ``leadflow demo`` names.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from engine.settings import Settings


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
