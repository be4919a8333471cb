"""An alert POSTed to a webhook: JSON, an idempotency key, the secret added on the wire only.

A webhook is called at least once per alert change: a runner killed between the answer
and its bookkeeping calls again, with the same ``Idempotency-Key`` (the action's id), so a
receiver can tell. The secret is read when the call is sent (a rotated file is used at
once) and appears in no log, error or stored row: errors name the URL's host and the
status, never headers or the body sent.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from engine.alerts.rules import WebhookSettings
from engine.errors import LeadflowError
from engine.runtime.calls.credentials import CredentialError, credential_headers


class WebhookError(LeadflowError):
    """The webhook did not take the alert; the message holds no secret."""


def send_webhook(webhook: WebhookSettings, body: dict[str, Any], idempotency_key: str) -> int:
    """POST ``body``; its status if 2xx, else ``WebhookError``."""
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "User-Agent": "leadflow-alerts",
    }
    if webhook.auth is not None:
        try:
            extra, _ = credential_headers(webhook.auth)
        except CredentialError as exc:  # names the variable or file, never a value
            raise WebhookError(str(exc)) from None
        headers.update(extra)
    url = str(webhook.url)
    host = webhook.url.host or "?"
    try:
        answer = httpx.post(
            url, content=orjson.dumps(body), headers=headers, timeout=webhook.timeout_ms / 1000
        )
    except httpx.HTTPError as exc:
        # The exception's text names the request's URL at most (no credentials in it:
        # refused at flow apply); its request object, with the headers, is not kept.
        raise WebhookError(f"webhook {host} unreachable: {type(exc).__name__}") from None
    if not 200 <= answer.status_code < 300:
        raise WebhookError(f"webhook {host} answered {answer.status_code}")
    return answer.status_code
