"""The operator UI in headless Chromium (Debian's, via Playwright) on leads that went through
the real pipeline: find a lead, read its timeline, inspect an event, diff two events, see the
dashboard; a hostile lead renders as text; every page passes an axe-core audit (no serious or
critical violation) and the find → timeline path works from the keyboard alone; the
scheduled exports page lists runs with their status and error. Screenshots
are kept in ``tests/artifacts/ui/``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, Request, expect, sync_playwright

from engine.export_schedules import LocalOutput
from engine.state.postgres import migrate_state
from projectors.exports import schedules
from projectors.exports.scheduler import ExportScheduler
from projectors.exports.schedules import ScheduleRequest
from projectors.selection import ExportQuery
from projectors.store import connect
from tests.engine.ui.conftest import (
    HOSTILE_CITY,
    HOSTILE_LAST,
    HOSTILE_NAME,
    HOSTILE_REASON,
    LONG_EVENTS,
    PII_KEY,
    UiStack,
)
from tests.projectors.test_insights import every_event, project
from tests.system_outbox import ensure_outbox

pytestmark = pytest.mark.stack

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
# Installed by `make test` (stack/chromium.sh: npm ci from stack/axe/package-lock.json).
AXE = ROOT / ".stack" / "tools" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# polyglot.md: without the background-networking flags, Chromium's own connections are
# refused by this closed network at every start.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    for path, how in ((CHROMIUM, "Debian's chromium package"), (AXE, "npm ci in stack/axe")):
        if not path.exists():
            pytest.fail(f"{path} is missing: `make test` installs it ({how}, stack/chromium.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, ui_stack: UiStack) -> Iterator[Page]:
    context = browser.new_context(base_url=ui_stack.url, viewport={"width": 1366, "height": 900})
    # axe is injected by the browser before each document's own scripts (not as a <script>
    # element, and not weakening the page's Content-Security-Policy).
    context.add_init_script(path=AXE)
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    assert dialogs == [], f"a dialog opened: data reached the page as code: {dialogs}"
    assert errors == [], f"script errors: {errors}"
    context.close()


def sign_in(page: Page, path: str) -> None:
    page.goto(path)
    page.get_by_label("API key").fill(PII_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#who")).to_contain_text("Key ops")


def audit(page: Page, name: str) -> None:
    """axe-core on the page as it is now; fails on serious or critical violations and keeps
    every finding in ``tests/artifacts/ui/axe-NAME.json``."""
    result: dict[str, Any] = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    violations = result["violations"]
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(violations, indent=2))
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert blocking == [], f"accessibility violations on the {name} page: {blocking}"


def test_find_timeline_inspect_diff_dashboard(page: Page, ui_stack: UiStack) -> None:
    good = ui_stack.good
    sign_in(page, "/ui/")
    page.get_by_label("Lead id, email or phone").fill(ui_stack.email)
    page.get_by_label("Lead id, email or phone").press("Enter")
    expect(page.locator("#search-results")).to_contain_text(good.lead_id)
    audit(page, "find")
    page.get_by_role("link", name=good.lead_id).click()
    expect(page.locator("#timeline tbody tr")).to_have_count(len(good.events))
    expect(page.locator("#summary")).to_contain_text(ui_stack.email)
    audit(page, "timeline")
    page.screenshot(path=ARTIFACTS / "timeline.png", full_page=True)

    # The key stays in this tab's session: the next page loads without asking again.
    page.get_by_role("link", name="recipient.delivered").click()
    expect(page.locator("#tree")).to_contain_text("appended.premier.id")
    expect(page.locator("#facts")).to_contain_text("Premier")
    expect(page.locator("#http-body")).to_contain_text("Response")
    audit(page, "event")
    page.screenshot(path=ARTIFACTS / "event.png", full_page=True)

    page.go_back()
    delivered = [e["type"] for e in good.events].index("recipient.delivered") + 1
    page.get_by_label("Select event 1 to compare").check()
    page.get_by_label(f"Select event {delivered} to compare").check()
    page.get_by_role("link", name=f"Compare #1 → #{delivered}").click()
    expect(page.locator("#diff")).to_contain_text("appended.premier.id")
    expect(page.locator("#diff")).to_contain_text("Event fields changed")
    audit(page, "diff")
    page.screenshot(path=ARTIFACTS / "diff.png", full_page=True)

    page.goto(f"/ui/flows/{ui_stack.flow_id}")
    expect(page.locator("#outcomes svg rect.bar")).not_to_have_count(0)
    expect(page.locator("#reasons")).to_contain_text(HOSTILE_REASON)
    expect(page.locator("#reasons")).to_contain_text("Duplicate lead")
    # No workers' metrics given to this server: the card says how to give them.
    expect(page.locator("#calls")).to_contain_text("LEADFLOW_METRICS_PORT")
    audit(page, "dashboard")
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)


def test_dashboard_analytics_panels(page: Page, ui_stack: UiStack) -> None:
    """The seed 002 panels, from the analytics projection of the fixed leads of
    ``tests/projectors/test_insights.py`` (2025-11-24), charted and tabled."""
    with connect(ui_stack.settings) as conn:
        project(conn, every_event(ui_stack.flow_id))  # counted once however often it runs
    sign_in(
        page, f"/ui/flows/{ui_stack.flow_id}?start=2025-11-24T00:00:00Z&end=2025-11-27T00:00:00Z"
    )
    expect(page.locator("#in-steps")).to_contain_text("phone-check")
    # p95 per hour (two hours of three steps), then p50 and p95 per step
    expect(page.locator("#in-steps svg rect.bar")).to_have_count(6 + 6)
    expect(page.locator("#in-rejections")).to_contain_text("Service found no data")
    expect(page.locator("#in-enhancements")).to_contain_text("100.00%")  # delivered with it
    expect(page.locator("#in-enhancements")).to_contain_text("50.00%")  # and without
    expect(page.locator("#in-sources")).to_contain_text("partner")
    expect(page.locator("#in-sources")).to_contain_text("25.00")  # the web source's profit
    expect(page.locator("#in-buyers svg rect.bar")).to_have_count(2)  # premier at 16h and 17h
    expect(page.locator("#in-buyers")).to_contain_text("33.33%")  # returns per delivery
    audit(page, "dashboard-analytics")
    page.locator("#in-steps").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "dashboard-analytics.png", full_page=True)


def test_hostile_lead_renders_as_text(page: Page, ui_stack: UiStack) -> None:
    hostile = ui_stack.hostile
    sign_in(page, f"/ui/?flow={ui_stack.flow_id}&type=filter.failed")
    expect(page.locator("#browse-results")).to_contain_text(HOSTILE_NAME)
    expect(page.locator("#browse-results")).to_contain_text(HOSTILE_REASON)
    audit(page, "hostile-find")
    page.screenshot(path=ARTIFACTS / "find.png", full_page=True)

    page.goto(f"/ui/leads/{hostile.lead_id}")
    expect(page.locator("#summary")).to_contain_text(f"{HOSTILE_NAME} {HOSTILE_LAST}")
    expect(page.locator("#timeline")).to_contain_text(HOSTILE_REASON)
    failed_rows = sum(e["outcome"] != "success" for e in hostile.events)
    expect(page.locator("#timeline tr.bad")).to_have_count(failed_rows)
    audit(page, "hostile-timeline")
    page.screenshot(path=ARTIFACTS / "hostile-timeline.png", full_page=True)

    page.goto(f"/ui/events/{hostile.first('filter.failed')['id']}")
    page.get_by_role("button", name="Expand all").click()
    expect(page.locator("#facts")).to_contain_text(HOSTILE_REASON)
    expect(page.locator("#tree")).to_contain_text(HOSTILE_CITY)
    expect(page.locator("#tree")).to_contain_text("<script>alert(4)</script>")
    # Only the page's own scripts: nothing from the data became an element.
    assert page.locator("script").count() == 2
    assert page.locator("img, svg[onload], b").count() == 0
    audit(page, "hostile-event")
    page.screenshot(path=ARTIFACTS / "hostile-event.png", full_page=True)


def test_a_lead_with_hundreds_of_events(page: Page, ui_stack: UiStack) -> None:
    """The whole timeline in one request, whatever its length (no request per event), and a
    diff between its first and last events."""
    long = ui_stack.long
    assert len(long.events) == LONG_EVENTS
    sign_in(page, "/ui/")
    api_calls: list[str] = []

    def on_request(request: Request) -> None:
        if "/ui/api/" in request.url:
            api_calls.append(request.url)

    page.on("request", on_request)
    page.goto(f"/ui/leads/{long.lead_id}")
    expect(page.locator("#timeline tbody tr")).to_have_count(LONG_EVENTS)
    expect(page.locator("#timeline tr.err")).to_have_count(LONG_EVENTS // 2 - 1)
    assert len(api_calls) == 2, api_calls  # whoami and the lead: not one per event
    audit(page, "long-timeline")
    page.screenshot(path=ARTIFACTS / "long-timeline.png")

    first, last = long.events[0]["id"], long.events[-1]["id"]
    page.goto(f"/ui/leads/{long.lead_id}/diff?from={first}&to={last}")
    expect(page.locator("#diff")).to_contain_text("appended.premier.last_error")
    expect(page.locator("#to option")).to_have_count(LONG_EVENTS)
    expect(page.locator("#to")).to_have_value(last)
    page.screenshot(path=ARTIFACTS / "long-diff.png")


def _focused(page: Page) -> dict[str, Any]:
    """What has the keyboard focus, and whether the focus ring is drawn."""
    found: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {id: el.id, tag: el.tagName, text: (el.textContent || "").trim(),
                    label: el.getAttribute("aria-label") || "",
                    inTimeline: Boolean(el.closest("#timeline tbody")),
                    ring: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2};
        }"""
    )
    return found


def _tab_to(page: Page, wanted: Any, limit: int = 40) -> dict[str, Any]:
    """Press Tab until ``wanted(focused)`` holds; the focused element then."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = _focused(page)
        if wanted(focused):
            return focused
    raise AssertionError(f"never reached by Tab; focus ended on {_focused(page)}")


def test_keyboard_only(page: Page, ui_stack: UiStack) -> None:
    """Sign in, search, open the result and walk the timeline rows with the keyboard alone;
    whatever has the focus shows it."""
    good = ui_stack.good
    page.goto("/ui/")
    expect(page.get_by_label("API key")).to_be_focused()
    audit(page, "sign-in")
    page.keyboard.type(PII_KEY)  # the key field has the focus when the page asks for a key
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_contain_text("Key ops")

    search = _tab_to(page, lambda f: f["id"] == "q")
    assert search["ring"], "the search field shows no focus ring"
    page.keyboard.type(ui_stack.phone)
    page.keyboard.press("Enter")
    result = _tab_to(page, lambda f: f["tag"] == "A" and f["text"] == good.lead_id)
    assert result["ring"], "the result link shows no focus ring"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{ui_stack.url}/ui/leads/{good.lead_id}")
    expect(page.locator("#timeline tbody tr")).to_have_count(len(good.events))

    first = _tab_to(page, lambda f: f["inTimeline"])
    assert first["label"] == "Select event 1 to compare" and first["ring"]
    page.keyboard.press("Space")
    expect(page.get_by_label("Select event 1 to compare")).to_be_checked()
    link = _tab_to(page, lambda f: f["inTimeline"] and f["tag"] == "A")
    assert link["text"] == good.events[0]["type"] and link["ring"]
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{ui_stack.url}/ui/events/{good.events[0]['id']}")
    expect(page.locator("#facts")).to_contain_text(good.events[0]["type"])


def test_scheduled_export_runs_with_status_and_error(
    page: Page, ui_stack: UiStack, tmp_path: Path
) -> None:
    """Two schedules run by a scheduler with a fake clock: one writes its file, the other
    fails (no local folder configured) and waits for its retry; the page lists both."""
    settings = ui_stack.settings
    migrate_state(settings)
    ensure_outbox(settings)
    now = [datetime(2026, 12, 5, 10, 0, tzinfo=UTC)]
    query = ExportQuery(flow_id=ui_stack.flow_id)
    with connect(settings) as conn:
        made = [
            schedules.create_schedule(
                conn,
                ScheduleRequest(cron="5 10 * * *", query=query, destination=destination),
                "ui-test",
                now[0],
                clear_text=False,
            )
            for destination in (LocalOutput(kind="local", path="ui"), LocalOutput(kind="local"))
        ]
        now[0] += timedelta(minutes=5)
        writes = settings.model_copy(update={"export_local_dir": tmp_path})
        refuses = settings.model_copy(update={"export_local_dir": None})
        for which, config in zip(made, (writes, refuses), strict=True):
            conn.execute(  # each scheduler finds only its own schedule due
                "UPDATE engine_export_schedules SET enabled = (id = %s)", (which.id,)
            )
            ExportScheduler(config, clock=lambda: now[0], name="ui-test").run_once(conn)

    sign_in(page, "/ui/exports")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#runs tbody tr.run-row-completed")).to_contain_text(made[0].id)
    expect(page.locator("#runs tbody tr.run-row-completed")).to_contain_text("file://")
    failing = page.locator("#runs tbody tr.run-row-queued")
    expect(failing).to_contain_text(made[1].id)
    expect(failing).to_contain_text("needs LEADFLOW_EXPORT_LOCAL_DIR")
    expect(failing).to_contain_text("retry pending")
    audit(page, "exports")
    page.screenshot(path=ARTIFACTS / "exports.png", full_page=True)
