"""The filters every read takes, under either name of a field (README, "Field names")."""

from typing import Annotated

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import ValidationError

from projectors.selection import FIELD_ALIASES, ExportQuery
from schemas.codec import load_schema


def test_an_export_takes_a_filter_under_either_name() -> None:
    by_alias = ExportQuery.model_validate(
        {"event_id": ["E1"], "rejection_reason": "Duplicate", "min_duration_ms": 5}
    )
    by_name = ExportQuery.model_validate({"id": ["E1"], "reason": "Duplicate", "min_ms": 5})
    assert by_alias == by_name
    # A job stores its filters under the one name.
    assert by_alias.filters() == {"id": ["E1"], "reason": "Duplicate", "min_ms": 5}


def test_a_filter_under_both_names_is_refused() -> None:
    with pytest.raises(ValidationError, match="rejection_reason and reason are one filter"):
        ExportQuery.model_validate({"reason": "a", "rejection_reason": "b"})


def test_every_alias_names_a_field_of_the_event_schema() -> None:
    names = {f["name"] for f in load_schema()["fields"]}
    assert set(FIELD_ALIASES.values()) <= names
    assert not set(FIELD_ALIASES) & names


def test_the_export_routes_take_the_aliases_from_a_query_string() -> None:
    app = FastAPI()

    @app.get("/x")
    def x(q: Annotated[ExportQuery, Query()]) -> dict[str, object]:
        return q.filters()

    client = TestClient(app)
    assert client.get("/x?event_id=E1").json() == {"id": ["E1"]}
    assert client.get("/x?event_id=E1&event_id=E2").json() == {"id": ["E1", "E2"]}
    assert client.get("/x?rejection_reason=Dup&min_duration_ms=5").json() == {
        "reason": "Dup",
        "min_ms": 5,
    }
    assert client.get("/x?reason=a&rejection_reason=b").status_code == 422
