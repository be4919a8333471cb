"""Scopes as the guard reads them, and the token buckets behind the 429s (on a fake clock)."""

from __future__ import annotations

import pytest

from engine.access import limits
from engine.access.keys import digest, key_id_of, new_key
from engine.access.limits import RateLimiter
from engine.access.scopes import Principal, ScopeError, parse_scopes


def test_the_uis_older_scopes_mean_what_they_always_granted() -> None:
    assert parse_scopes(["read", "pii"]) == {"events:read", "stats", "exports", "pii:read"}


def test_an_unknown_scope_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ScopeError, match="events:read, pii:read"):
        parse_scopes(["admin"])


def test_wildcards_cover_every_source_or_recipient_and_nothing_else() -> None:
    ops = Principal("k", "ops", parse_scopes(["intake:*", "feedback:*"]))
    buyer = Principal("b", "premier", parse_scopes(["feedback:premier"]))
    assert ops.has("intake:webform") and ops.has("feedback:premier")
    assert not ops.has("events:read") and not ops.sees_pii
    assert ops.feedback_recipients() is None  # any
    assert buyer.feedback_recipients() == {"premier"} and not buyer.has("feedback:other")


def test_a_flow_restricted_key_sees_only_its_flows() -> None:
    key = Principal("k", "a", frozenset({"events:read"}), flows=frozenset({"solar"}))
    assert key.sees_flow("solar") and not key.sees_flow("roofing") and not key.sees_flow(None)
    assert Principal("k", "all", frozenset()).sees_flow(None)


def test_a_stored_key_names_its_row_and_only_its_keyed_hash_proves_it() -> None:
    key_id, key = new_key()
    assert key_id_of(key) == key_id and key_id_of("lf_x_y") is None
    assert digest("pepper", key) != digest("other pepper", key)


def test_a_bucket_refills_evenly_and_says_how_long_to_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    bucket = RateLimiter()
    assert [bucket.take("key", 60) for _ in range(60)] == [None] * 60
    assert bucket.take("key", 60) == 1  # one a second: wait one
    assert bucket.take("other", 60) is None  # per name
    now[0] += 1.0
    assert bucket.take("key", 60) is None and bucket.take("key", 60) == 1
    assert bucket.empty("key", 60) == 1  # looking takes nothing
