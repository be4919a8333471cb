"""The ASGI application: ``uvicorn engine.api.app:create_app --factory`` or ``leadflow serve``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError

from engine import __version__
from engine.access.guard import AccessDeniedError, access_denied
from engine.api.feedback import router as feedback_router
from engine.api.intake import router as intake_router
from engine.api.metrics import router as metrics_router
from engine.api.pings import router as pings_router
from engine.api.system_events import router as system_events_router
from engine.settings import Settings, get_settings
from engine.ui.routes import router as ui_router
from engine.web.body_limit import BodyLimit
from engine.web.responses import VALIDATION
from engine.web.validation import bounded_validation_errors, reject_unstorable_text
from projectors.api import router as events_router
from projectors.exports.api import router as exports_router
from projectors.exports.schedule_api import router as export_schedules_router
from projectors.insights_api import router as insights_router
from projectors.stats_api import router as stats_router


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if app.state.feedback_flows is not None:  # started by the first feedback request
        app.state.feedback_flows.close()
        app.state.feedback_flows = None
    if app.state.intake is not None:  # started by the first intake request
        await app.state.intake.close()
        # The app may be started again (a test client per test): the next intake request
        # must start a service of its own, not find this closed one.
        app.state.intake = None


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="leadflow",
        version=__version__,
        lifespan=_lifespan,
        # Every route, present and future: see engine.web.validation.
        dependencies=[Depends(reject_unstorable_text)],
        exception_handlers={
            RequestValidationError: bounded_validation_errors,
            AccessDeniedError: access_denied,
        },
        responses=VALIDATION,  # so any route can answer 422 (a NUL in a header, say)
    )
    app.state.settings = settings or get_settings()
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.max_body_bytes)
    app.state.intake = None
    app.state.feedback_flows = None  # engine.api.feedback: the flows, for return windows
    app.state.intake_lock = asyncio.Lock()
    app.include_router(feedback_router)
    app.include_router(intake_router)
    app.include_router(pings_router)
    app.include_router(metrics_router)
    app.include_router(system_events_router)
    app.include_router(stats_router)  # before events: /events/stats is no event id
    app.include_router(insights_router)
    app.include_router(exports_router)  # before events: /events/export is no event id
    app.include_router(export_schedules_router)
    app.include_router(events_router)
    app.include_router(ui_router)  # the operator UI: /ui pages and /ui/api reads

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
