"""Everything the operator UI adds to the API process, as the one router ``create_app`` includes."""

from __future__ import annotations

from fastapi import APIRouter

from engine.ui.api import router as api_router
from engine.ui.pages import router as pages_router

router = APIRouter()
router.include_router(api_router)  # before the pages: /ui/api/... is no page
router.include_router(pages_router)
