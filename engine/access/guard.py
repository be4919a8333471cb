"""The routes' guard: who is asking (401), may they (403), not too often (429).

Every route but ``/healthz`` (and ``/metrics`` unless ``metrics_need_key``), the UI's
page shells and the OpenAPI document needs a key: ``Authorization: Bearer <key>`` or
``X-API-Key`` (never a query parameter: URLs end up in access logs). A key is either
stored (``leadflow keys``, ``engine.access.store``) or configured by reference
(``LEADFLOW_API_KEYS``/``LEADFLOW_UI_KEYS``). Lookups are cached for
``api_key_cache_seconds``, so a created, rotated or revoked key takes effect within
that time in every process, without a restart.

A refusal is ``{"error", "reason"}`` JSON. Failures are logged with the client's
address and the reason, never the key, and each address gets
``auth_failures_per_minute`` of them before it is answered 429 without a lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from engine.access.keys import key_id_of
from engine.access.limits import RateLimiter
from engine.access.scopes import Principal, ScopeError, parse_scopes
from engine.access.store import find_principal
from engine.intake.client_ip import client_address, trusted_networks
from engine.settings import Settings, UiKey
from engine.state.errors import StateUnavailableError

log = structlog.get_logger(__name__)


class AccessDeniedError(HTTPException):
    """A request refused by the guard or by an object-level check: answered as
    ``{"error": code, "reason": reason}`` with ``status`` (see ``access_denied``). An
    ``HTTPException``, so an app built without that handler still answers the status."""

    def __init__(
        self, status: int, code: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, detail=reason, headers=headers)
        self.status = status
        self.code = code
        self.reason = reason


async def access_denied(_: Request, exc: Exception) -> JSONResponse:
    """The app's handler for ``AccessDeniedError``."""
    assert isinstance(exc, AccessDeniedError)
    return JSONResponse(
        {"error": exc.code, "reason": exc.reason}, status_code=exc.status, headers=exc.headers
    )


@dataclass
class _Access:
    """Per app: the lookup cache and the rate limiters."""

    cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    requests: RateLimiter = field(default_factory=RateLimiter)
    failures: RateLimiter = field(default_factory=RateLimiter)


def _access(request: Request) -> _Access:
    found = getattr(request.app.state, "access", None)
    if found is None:
        found = request.app.state.access = _Access()
    assert isinstance(found, _Access)
    return found


def presented_key(request: Request) -> str | None:
    """The key a request carries: ``Authorization: Bearer`` or ``X-API-Key``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


def _configured_value(key: UiKey) -> str | None:
    try:
        if key.key_env is not None:
            return os.environ.get(key.key_env, "").strip() or None
        assert key.key_file is not None
        return key.key_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _configured_principal(settings: Settings, presented: str) -> Principal | None:
    """The configured key ``presented`` is, comparing every one (no early exit: the time
    taken does not tell which key matched)."""
    wanted = hashlib.sha256(presented.encode()).digest()
    found: Principal | None = None
    for key in (*settings.api_keys, *settings.ui_keys):
        value = _configured_value(key)
        if value is None:
            continue
        if value.startswith("sha256:"):
            try:
                stored = bytes.fromhex(value.removeprefix("sha256:"))
            except ValueError:
                log.warning("configured key unreadable", key_name=key.name, why="not hex")
                continue
        else:
            stored = hashlib.sha256(value.encode()).digest()
        if hmac.compare_digest(stored, wanted) and found is None:
            try:
                scopes = parse_scopes(key.scopes)
            except ScopeError:
                continue
            found = Principal(
                key_id=f"config:{key.name}",
                name=key.name,
                scopes=scopes,
                flows=frozenset(key.flows) if key.flows is not None else None,
                rate_per_minute=key.rate_per_minute,
            )
    return found


def lookup(settings: Settings, presented: str) -> Principal | None:
    """The principal of a presented key, stored or configured; None if neither."""
    key_id = key_id_of(presented)
    if key_id is not None:
        return find_principal(settings, key_id, presented)
    return _configured_principal(settings, presented)


def client_ip(request: Request) -> str | None:
    """The client's address, as access control counts it and source events record it:
    the connection's peer, or through proxies the settings trust (``trusted_proxies``) the
    address they saw. (``leadflow serve`` turns uvicorn's own proxy-header handling off,
    so this is the only place X-Forwarded-For is believed.)"""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else None
    trusted = trusted_networks(settings.trusted_proxies)
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


def _client(request: Request) -> str:
    return client_ip(request) or "unknown"


def note_failure(request: Request, status: int, code: str) -> None:
    """Log a refused attempt (address, path, why; never the key) and count it against the
    client's address."""
    settings: Settings = request.app.state.settings
    address = _client(request)
    log.warning("access refused", client=address, path=request.url.path, status=status, why=code)
    _access(request).failures.take(address, settings.auth_failures_per_minute)


def failures_wait(request: Request) -> int | None:
    """Seconds the client's address must wait, having used up its failed attempts; or None."""
    settings: Settings = request.app.state.settings
    return _access(request).failures.empty(_client(request), settings.auth_failures_per_minute)


def _refuse(request: Request, status: int, code: str, reason: str) -> NoReturn:
    note_failure(request, status, code)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    raise AccessDeniedError(status, code, reason, headers)


async def authenticate(request: Request) -> Principal:
    """Route dependency: the request's principal, or a 401/429 refusal."""
    settings: Settings = request.app.state.settings
    access = _access(request)
    wait = failures_wait(request)
    if wait is not None:
        raise AccessDeniedError(
            429,
            "too_many_failures",
            f"Too many failed authentications from this address; retry in {wait} s",
            {"Retry-After": str(wait)},
        )
    presented = presented_key(request)
    if presented is None:
        _refuse(
            request,
            401,
            "unauthorized",
            "Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'",
        )
    cache_name = hashlib.sha256(presented.encode()).hexdigest()  # never the key itself
    cached = access.cache.get(cache_name)
    now = time.monotonic()
    if cached is not None and cached[1] > now:
        principal: Principal | None = cached[0]
    else:
        try:
            principal = await run_in_threadpool(lookup, settings, presented)
        except StateUnavailableError as exc:
            raise AccessDeniedError(
                503, "unavailable", "The key store is unavailable; retry later"
            ) from exc
        if principal is not None and settings.api_key_cache_seconds > 0:
            access.cache[cache_name] = (principal, now + settings.api_key_cache_seconds)
    if principal is None:
        _refuse(request, 401, "unauthorized", "Unknown or revoked API key")
    rate = principal.rate_per_minute or settings.api_rate_per_minute
    wait = access.requests.take(principal.key_id, rate)
    if wait is not None:
        raise AccessDeniedError(
            429,
            "rate_limited",
            f"Over {rate} requests per minute for this key; retry in {wait} s",
            {"Retry-After": str(wait)},
        )
    request.state.principal = principal
    return principal


Authenticated = Annotated[Principal, Depends(authenticate)]


def require(scope: str) -> Callable[..., Any]:
    """A dependency that lets a request through only with ``scope`` (403 otherwise).
    Made once per scope at import (FastAPI caches a dependency per callable and request)."""

    async def needs_scope(request: Request, principal: Authenticated) -> Principal:
        if not principal.has(scope):
            _refuse(request, 403, "forbidden", f"This key lacks the scope {scope}")
        return principal

    needs_scope.__name__ = f"needs_{scope.replace(':', '_')}"
    return needs_scope


EVENTS_READ = require("events:read")
STATS = require("stats")
EXPORTS = require("exports")
FLOWS_ADMIN = require("flows:admin")

EventsReader = Annotated[Principal, Depends(EVENTS_READ)]
StatsReader = Annotated[Principal, Depends(STATS)]
Exporter = Annotated[Principal, Depends(EXPORTS)]


def check_flow(principal: Principal, flow_id: str | None) -> None:
    """A 403 unless the key sees ``flow_id`` (a flow named in a query or path)."""
    if not principal.sees_flow(flow_id):
        raise AccessDeniedError(403, "forbidden", "This key may not read that flow")


def hide_foreign(principal: Principal, flow_id: str | None, unknown: str) -> None:
    """For an object found by id (an event, a lead, a job): the same 404 as an unknown id
    unless the key sees its flow, so a restricted key learns nothing of other flows."""
    if not principal.sees_flow(flow_id):
        raise HTTPException(404, detail=unknown)


def only_flow(principal: Principal, flow_id: str | None) -> str | None:
    """The flow a query must be narrowed to: ``flow_id`` if the key sees it (404 if not);
    for a flow-restricted key with no ``flow_id``, its one flow (422-like 403 with several)."""
    if flow_id is not None:
        check_flow(principal, flow_id)
        return flow_id
    if principal.flows is None:
        return None
    if len(principal.flows) == 1:
        return next(iter(principal.flows))
    raise AccessDeniedError(
        403, "flow_required", "This key is restricted to some flows: name one with flow_id"
    )
