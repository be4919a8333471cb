"""``GET /metrics``: Prometheus metrics of the API, across every uvicorn worker.

With several workers (``leadflow serve --workers N``) each is its own process,
so the counters live in files under ``PROMETHEUS_MULTIPROC_DIR`` (the serve
command sets it) and a scrape of any worker sums them all.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from engine.access.guard import AccessDeniedError, authenticate
from engine.settings import Settings
from engine.web.responses import as_text, guarded

router = APIRouter()

INTAKE_REQUESTS = Counter(
    "leadflow_intake_requests_total",
    "HTTP intake requests answered, by route kind and status.",
    ["kind", "status"],
)
INTAKE_SECONDS = Histogram(
    "leadflow_intake_request_seconds",
    "Time to answer an intake request, decisive event included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INTAKE_WAITING = Gauge(
    "leadflow_intake_waiting_requests",
    "Requests waiting for their lead's decisive event.",
    multiprocess_mode="livesum",
)


def observe(kind: str, status: int, seconds: float) -> None:
    INTAKE_REQUESTS.labels(kind, str(status)).inc()
    INTAKE_SECONDS.labels(kind).observe(seconds)


# response_class=Response: no JSON 200 in the OpenAPI; the 422 every route may answer stays JSON.
@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **as_text("Prometheus' text exposition format", "text/plain"),
        **guarded(),  # with metrics_need_key
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus' text exposition format; needs a ``stats`` key if ``metrics_need_key``."""
    settings: Settings = request.app.state.settings
    if settings.metrics_need_key:
        principal = await authenticate(request)
        if not principal.has("stats"):
            raise AccessDeniedError(403, "forbidden", "This key lacks the scope stats")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, media_type=CONTENT_TYPE_LATEST)
