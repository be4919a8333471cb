"""A service's credentials: read by reference when a call is sent, on the wire only, never
in what an event records (the request, or an answer that echoes them)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.runtime.calls import AsyncCallRunner
from engine.steps.calls import Call, CallAuth, Delivery
from engine.steps.recipient import RecipientSettings
from tests.engine.runtime.calls.service_stub import ServiceStub, service_stub

SECRET = "s3cr3t-buyer-key-0123456789"


@pytest.fixture
def stub() -> Iterator[ServiceStub]:
    with service_stub() as server:
        yield server


@pytest.fixture
def runner() -> Iterator[AsyncCallRunner]:
    made = AsyncCallRunner(max_in_flight=4)
    yield made
    made.close()


def call(url: str, auth: CallAuth) -> Call:
    return Call(Delivery(url, {"Idempotency-Key": "K"}, b"{}"), 2000, "Buyer", auth=auth)


def test_a_header_key_from_the_environment_is_sent_and_never_in_the_answer(
    stub: ServiceStub, runner: AsyncCallRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREMIER_KEY", SECRET)
    auth = CallAuth(kind="header", header="X-Api-Key", secret_env="PREMIER_KEY")
    answer = runner.run(call(stub.url("/echo"), auth))
    assert answer.status == 200
    assert stub.headers[-1]["X-Api-Key"] == SECRET  # on the wire
    assert SECRET.encode() not in answer.body  # the echo is masked before anyone records it
    assert b"[masked]" in answer.body


def test_basic_auth_from_a_file_is_masked_in_echoed_headers(
    stub: ServiceStub, runner: AsyncCallRunner, tmp_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    auth = CallAuth(kind="basic", username="acme", secret_file=secret_file)
    answer = runner.run(call(stub.url("/echo"), auth))
    token = base64.b64encode(f"acme:{SECRET}".encode()).decode()
    assert stub.headers[-1]["Authorization"] == f"Basic {token}"
    assert token.encode() not in answer.body and SECRET.encode() not in answer.body


def test_a_missing_secret_is_an_error_answer_naming_where_it_was_looked_for(
    stub: ServiceStub, runner: AsyncCallRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    auth = CallAuth(kind="bearer", secret_env="NOT_SET_KEY")
    answer = runner.run(call(stub.url("/ok"), auth))
    assert answer.status is None
    assert (
        answer.error == "Buyer credentials unavailable: environment variable NOT_SET_KEY is not set"
    )
    assert stub.requests == 0  # not sent without its credentials


def test_credentials_in_a_url_are_refused_with_where_they_go_instead() -> None:
    with pytest.raises(ValidationError, match="credentials in the URL are refused"):
        RecipientSettings(url="https://acme:hunter2@buyer.example/leads")


def test_auth_names_exactly_one_place_for_its_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one of secret_env or secret_file"):
        CallAuth(secret_env="A_KEY", secret_file=tmp_path / "key")
    with pytest.raises(ValidationError, match="basic auth needs a username"):
        CallAuth(kind="basic", secret_env="A_KEY")
