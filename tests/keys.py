"""The tests' API key: every scope, no flow restriction, a rate no test reaches.

``tests/conftest.py`` configures it by reference (``LEADFLOW_API_KEYS``) before any
``Settings`` is made, so every app a test builds takes it; a client sends ``ADMIN``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

ADMIN_KEY = "tests-admin-key-not-a-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ALL_SCOPES = (
    "events:read",
    "pii:read",
    "exports",
    "stats",
    "flows:admin",
    "intake:*",
    "feedback:*",
)

ENVIRONMENT = {
    "LEADFLOW_TEST_API_KEY": ADMIN_KEY,
    "LEADFLOW_API_KEYS": json.dumps(
        [
            {
                "name": "tests",
                "key_env": "LEADFLOW_TEST_API_KEY",
                "scopes": list(ALL_SCOPES),
                "rate_per_minute": 1_000_000,
            }
        ]
    ),
}


def admin_client(app: Any, **options: Any) -> TestClient:
    """A test client that sends the tests' key with every request."""
    return TestClient(app, headers=ADMIN, **options)
