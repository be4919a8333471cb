"""diff_snapshots: what a step added, removed and rewrote in a lead's ``vars``."""

from __future__ import annotations

from typing import Any

from projectors.diff import SnapshotDiff, diff_snapshots


def event(vars: dict[str, Any] | None, appended: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "e", "type": "t", "vars": vars, "appended": appended}


def test_added_removed_and_changed_fields_are_told_apart() -> None:
    before = event({"phone": "5551234567", "state": "TX", "zip": "78701"})
    after = event({"phone": "(555) 123-4567", "state": "TX", "phone.valid": True})
    assert diff_snapshots(before, after) == SnapshotDiff(
        added={"phone.valid": True},
        removed={"zip": "78701"},
        changed={"phone": {"before": "5551234567", "after": "(555) 123-4567"}},
    )


def test_identical_vars_are_no_change() -> None:
    same = {"a": 1, "nested": {"x": [1, 2], "y": None}}
    assert diff_snapshots(event(same), event(dict(same))) == SnapshotDiff()


def test_a_change_of_json_type_is_a_change_even_when_python_calls_it_equal() -> None:
    diff = diff_snapshots(event({"a": 1, "b": 0, "c": 2}), event({"a": True, "b": 0.0, "c": 2}))
    assert diff.changed == {"a": {"before": 1, "after": True}, "b": {"before": 0, "after": 0.0}}


def test_nested_values_compare_by_content_not_key_order() -> None:
    before = event({"n": {"x": 1, "y": 2}})
    assert diff_snapshots(before, event({"n": {"y": 2, "x": 1}})).changed == {}
    assert diff_snapshots(before, event({"n": {"x": 1, "y": 3}})).changed == {
        "n": {"before": {"x": 1, "y": 2}, "after": {"x": 1, "y": 3}}
    }


def test_appended_is_the_later_events_own_and_missing_vars_count_as_empty() -> None:
    diff = diff_snapshots(event(None), event({"k": "v"}, appended={"appended.b.id": "B-1"}))
    assert diff.added == {"k": "v"}
    assert diff.appended == {"appended.b.id": "B-1"}
    assert diff.as_dict() == {
        "added": {"k": "v"},
        "removed": {},
        "changed": {},
        "appended": {"appended.b.id": "B-1"},
    }
