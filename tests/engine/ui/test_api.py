"""The UI's JSON reads, on leads the pipeline projected: the key is required, travels only
in a header, and PII is masked unless the key has the ``pii`` scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from engine.api.app import create_app
from engine.masking import for_reader, mask_text
from engine.runtime.calls import metrics as breakers
from engine.runtime.kafka.metrics import serve_metrics
from engine.settings import Settings
from engine.ui.queries import classify
from tests.engine.ui.conftest import HOSTILE_REASON, MASKED_KEY, PII_KEY, UiStack


@pytest.fixture(scope="module")
def client(ui_settings: Settings) -> TestClient:
    return TestClient(create_app(ui_settings))  # no key of its own: each test sends one


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.stack
def test_every_data_route_needs_a_valid_key(client: TestClient, ui_stack: UiStack) -> None:
    lead = ui_stack.good.lead_id
    for path in ("/ui/api/whoami", "/ui/api/flows", f"/ui/api/leads/{lead}"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer("wrong")).status_code == 401
        assert client.get(path, headers=bearer(PII_KEY)).status_code == 200
    # A key in the URL is not a way in (and the strict query check refuses the parameter).
    assert client.get(f"/ui/api/leads/{lead}?key={PII_KEY}").status_code in (401, 422)
    assert client.get("/ui/api/whoami", headers=bearer(MASKED_KEY)).json() == {
        "name": "support",
        "scopes": ["events:read", "exports", "stats"],  # what the UI's older "read" grants
    }


@pytest.mark.stack
def test_pii_is_masked_without_the_pii_scope(client: TestClient, ui_stack: UiStack) -> None:
    lead = ui_stack.good.lead_id
    full = client.get(f"/ui/api/leads/{lead}", headers=bearer(PII_KEY)).json()["lead"]
    masked = client.get(f"/ui/api/leads/{lead}", headers=bearer(MASKED_KEY)).json()["lead"]
    assert (full["email"], full["phone"]) == ("ada@example.com", "5125550147")
    assert (masked["email"], masked["phone"]) == (
        "a***@example.com",
        "512-***-****",
    )  # the area code stays
    delivered = ui_stack.good.first("recipient.delivered")
    event = client.get(f"/ui/api/events/{delivered['id']}", headers=bearer(MASKED_KEY)).json()
    assert "ada@example.com" not in str(event) and "5125550147" not in str(event)


@pytest.mark.stack
def test_search_by_email_phone_and_id(client: TestClient, ui_stack: UiStack) -> None:
    lead = ui_stack.good.lead_id
    for q in ("ADA@example.com ", lead.lower()):
        answer = client.post("/ui/api/leads/search", json={"q": q}, headers=bearer(PII_KEY))
        assert [r["lead_id"] for r in answer.json()["leads"]] == [lead], q


@pytest.mark.stack
def test_browse_and_diff(client: TestClient, ui_stack: UiStack) -> None:
    flow = ui_stack.flow_id
    failed = client.get(
        f"/ui/api/flows/{flow}/leads",
        params={"type": "filter.failed", "outcome": "failure"},
        headers=bearer(PII_KEY),
    ).json()
    assert [r["reason"] for r in failed["rows"]] == [HOSTILE_REASON]
    good = ui_stack.good
    delivered = good.first("recipient.delivered")
    diff = client.get(
        f"/ui/api/leads/{good.lead_id}/diff",
        params={"to": delivered["id"]},
        headers=bearer(PII_KEY),
    ).json()
    # By default the event is compared with the one before it: the filter's verdict.
    assert diff["from"]["id"] == good.first("filter.passed")["id"]
    assert "appended.premier.id" in diff["added"]
    assert diff["added"] == delivered["appended"]


def test_masking_rules() -> None:
    assert mask_text("call (512) 555-0147 or mail Ada.L@x.io") == (
        "call 512-***-**** or mail A***@x.io"
    )
    assert mask_text("id 1764000000002 and zip 78701") == "id 1764000000002 and zip 78701"
    value = {
        "vars": {"lead.email": "a@b.co", "lead.email.valid": True, "lead.phone_1.line": "0147"},
        "changed": {"lead.email": {"before": "a@b.co", "after": "c@d.co"}},
        "request": {"headers": {"Authorization": "Bearer s3cret", "Accept": "x"}},
    }
    shown = for_reader(value, sees_pii=False)
    assert shown["vars"] == {
        "lead.email": "a***@b.co",
        "lead.email.valid": True,
        "lead.phone_1.line": "***",
    }
    assert shown["changed"]["lead.email"] == {"before": "a***@b.co", "after": "c***@d.co"}
    assert for_reader(value, sees_pii=True)["request"]["headers"]["Authorization"] == "***"


def test_classify() -> None:
    assert classify("+1 (512) 555-0147") == ("phone", "5125550147")
    assert classify(" Ada@Example.COM") == ("email", "ada@example.com")
    assert classify("01kav9ft02fxyr9hm1s9j224nf") == ("lead_id", "01KAV9FT02FXYR9HM1S9J224NF")
    assert classify("ada")[0] == "unknown"


@pytest.mark.stack
def test_the_calls_card_reads_the_workers_metrics(ui_settings: Settings, ui_stack: UiStack) -> None:
    """The flow page's "Buyers and services" card: the breaker and counts per destination
    from the metrics URL the server is given; without one, it says none is configured."""
    unset = TestClient(create_app(ui_settings.model_copy(update={"metrics_port": 0})))
    assert unset.get("/ui/api/calls", headers=bearer(MASKED_KEY)).json() == {
        "configured": False,
        "sources": [],
    }
    server, _ = serve_metrics(0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        breakers.breaker_state("http://buyer.example:443", "open")
        served = TestClient(create_app(ui_settings.model_copy(update={"calls_metrics_urls": url})))
        assert served.get("/ui/api/calls").status_code == 401
        answer = served.get("/ui/api/calls", headers=bearer(MASKED_KEY)).json()
    finally:
        server.shutdown()
        server.server_close()
    assert answer["configured"] is True
    [source] = answer["sources"]
    rows = {row["destination"]: row for row in source["destinations"]}
    assert rows["http://buyer.example:443"]["breaker"] == ["open"]
