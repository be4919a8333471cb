"""``create_app``'s lifespan: what it stops at shutdown, and that the app can start again."""

from __future__ import annotations

from engine.api.app import create_app
from engine.settings import Settings
from tests.keys import admin_client


class ClosableService:
    """Stands in for the intake service: all the lifespan does with it is close it."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_shutdown_closes_the_intake_service_and_a_restart_starts_a_new_one() -> None:
    app = create_app(Settings(export_worker_in_api=False))
    for _ in range(2):
        with admin_client(app):
            service = ClosableService()
            app.state.intake = service  # what the first intake request would have started
        assert service.closed
        # Left in place, the closed service would answer every intake request of the next
        # start with "pool closed" (a 503, or a 500 on the ping route).
        assert app.state.intake is None
