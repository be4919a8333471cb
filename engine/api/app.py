"""The ASGI application: ``uvicorn engine.api.app:create_app --factory`` or ``leadflow serve``."""

from __future__ import annotations

from fastapi import FastAPI

from engine import __version__
from engine.api.feedback import router as feedback_router
from engine.settings import Settings, get_settings
from projectors.api import router as events_router
from projectors.exports.api import router as exports_router
from projectors.stats_api import router as stats_router


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="leadflow", version=__version__)
    app.state.settings = settings or get_settings()
    app.include_router(feedback_router)
    app.include_router(stats_router)  # before events: /events/stats is no event id
    app.include_router(exports_router)  # before events: /events/export is no event id
    app.include_router(events_router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
