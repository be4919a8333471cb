"""The filters every read takes, under either name of a field (README, "Field names")."""

import pytest
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
