"""The operator UI in headless Chromium (Debian's, via Playwright) against the real stack:
find a lead, read its timeline, inspect an event, diff two events, see the dashboard; a
hostile lead renders as text. Screenshots are kept in ``tests/artifacts/ui/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.engine.ui.conftest import HOSTILE_LAST, HOSTILE_NAME, HOSTILE_REASON, PII_KEY, Leads

pytestmark = pytest.mark.stack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "ui"
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
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it (stack/chromium.sh, Debian's"
            " chromium package); run `bash stack/chromium.sh` as root"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, ui_server: str) -> Iterator[Page]:
    context = browser.new_context(base_url=ui_server, viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
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


def test_find_timeline_inspect_diff_dashboard(page: Page, ui_leads: Leads) -> None:
    good = ui_leads.good
    lead_id = good[0]["lead_id"]
    sign_in(page, "/ui/")
    page.get_by_label("Lead id, email or phone").fill(ui_leads.email)
    page.get_by_label("Lead id, email or phone").press("Enter")
    page.get_by_role("link", name=lead_id).click()
    expect(page.locator("#timeline tbody tr")).to_have_count(len(good))
    expect(page.locator("#summary")).to_contain_text("ada@example.com")
    page.screenshot(path=ARTIFACTS / "timeline.png", full_page=True)

    # The key stays in this tab's session: the next page loads without asking again.
    page.get_by_role("link", name="recipient.delivered").click()
    expect(page.locator("#tree")).to_contain_text("appended.premier.id")
    expect(page.locator("#facts")).to_contain_text("Premier")
    page.screenshot(path=ARTIFACTS / "event.png", full_page=True)

    page.go_back()
    page.get_by_label("Select event 1 to compare").check()
    page.get_by_label("Select event 4 to compare").check()
    page.get_by_role("link", name="Compare #1 → #4").click()
    expect(page.locator("#diff")).to_contain_text("appended.premier.id")
    expect(page.locator("#diff")).to_contain_text("Event fields changed")
    page.screenshot(path=ARTIFACTS / "diff.png", full_page=True)

    page.goto(f"/ui/flows/{ui_leads.flow_id}")
    expect(page.locator("#outcomes svg rect.bar")).not_to_have_count(0)
    expect(page.locator("#reasons")).to_contain_text(HOSTILE_REASON)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)


def test_hostile_lead_renders_as_text(page: Page, ui_leads: Leads) -> None:
    lead_id = ui_leads.hostile[0]["lead_id"]
    sign_in(page, f"/ui/?flow={ui_leads.flow_id}&type=filter.failed")
    expect(page.locator("#browse-results")).to_contain_text(HOSTILE_NAME)
    page.screenshot(path=ARTIFACTS / "find.png", full_page=True)

    page.goto(f"/ui/leads/{lead_id}")
    expect(page.locator("#summary")).to_contain_text(f"{HOSTILE_NAME} {HOSTILE_LAST}")
    expect(page.locator("#timeline")).to_contain_text(HOSTILE_REASON)
    expect(page.locator("#timeline tr.bad")).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "hostile-timeline.png", full_page=True)

    failed = next(e for e in ui_leads.hostile if e["type"] == "filter.failed")
    page.goto(f"/ui/events/{failed['id']}")
    page.get_by_role("button", name="Expand all").click()
    expect(page.locator("#tree")).to_contain_text("Zoë 🚀 العربية 漢字")
    expect(page.locator("#tree")).to_contain_text("<script>alert(4)</script>")
    # Only the page's own scripts: nothing from the data became an element.
    assert page.locator("script").count() == 2
    assert page.locator("img, svg[onload], b").count() == 0
    page.screenshot(path=ARTIFACTS / "hostile-event.png", full_page=True)
