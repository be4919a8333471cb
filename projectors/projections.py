"""The projections leadflow keeps, by name: the timeline and the analytics."""

from __future__ import annotations

from engine.errors import ConfigError
from projectors.analytics import ANALYTICS
from projectors.projection import Projection
from projectors.timeline import TIMELINE

PROJECTIONS = {p.name: p for p in (TIMELINE, ANALYTICS)}
NAMES = tuple(PROJECTIONS)


def projection(name: str) -> Projection:
    """The projection called ``name``; ``ConfigError`` listing the known ones otherwise."""
    found = PROJECTIONS.get(name)
    if found is None:
        raise ConfigError(f"unknown projection {name!r}; known: {', '.join(NAMES)}")
    return found
