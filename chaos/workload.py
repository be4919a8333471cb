"""The leads a chaos run submits, each with the exact events it must end up with.

Every lead is built so that the flow's pure decisions (``engine.steps``) and the local
buyer's rules (``engine.demo.buyer``) fix its path, and event ids are deterministic
(``engine.ids.event_id``: lead, submission time, step, sequence), so the harness knows
every event id a lead must have before any worker runs. Malformed and oversized leads are
drawn by hypothesis from a seed (reproducible) and kept only if the source step's own
decision rejects them, so their path is fixed too.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from engine.flows import Flow, SourceStep
from engine.ids import derived_lead_id, event_id, id_timestamp_ms
from engine.steps.source import Submission, accept_submission

# (step index, sequence within the step's events, type): what each kind of lead records.
_ACCEPTED = [(0, 0, "source.submitted"), (0, 1, "source.accepted")]
PATHS: dict[str, list[tuple[int, int, str]]] = {
    "delivered": [*_ACCEPTED, (1, 0, "filter.passed"), (2, 0, "recipient.delivered"),
                  (2, 1, "flow.completed")],
    "filtered": [*_ACCEPTED, (1, 0, "filter.failed"), (1, 1, "flow.completed")],
    "buyer_rejected": [*_ACCEPTED, (1, 0, "filter.passed"), (2, 0, "recipient.failed"),
                       (2, 1, "flow.completed")],
    "buyer_error": [*_ACCEPTED, (1, 0, "filter.passed"), (2, 0, "recipient.error"),
                    (2, 1, "flow.completed")],
    # The buyer answers after SLOW_BUYER_S, past the recipient's timeout: recipient.error.
    "slow_buyer": [*_ACCEPTED, (1, 0, "filter.passed"), (2, 0, "recipient.error"),
                   (2, 1, "flow.completed")],
    # The buyer answers in 300 ms, within the 500 ms timeout, and its worker is killed with
    # hundreds in flight (the inflight_kill fault): delivered, or - when a burst of hundreds
    # on a loaded machine (a broker down too) runs past the deadline - an error; either way
    # one delivery event, never two.
    "inflight": [*_ACCEPTED, (1, 0, "filter.passed"),
                 (2, 0, "recipient.delivered|recipient.error"), (2, 1, "flow.completed")],
    "malformed": [(0, 0, "source.submitted"), (0, 1, "source.rejected"), (0, 2, "flow.completed")],
    "oversized": [(0, 0, "source.submitted"), (0, 1, "source.rejected"), (0, 2, "flow.completed")],
}  # fmt: skip

SERVED = ["TX", "CA", "FL", "AZ", "NV"]
UNSERVED = ["NY", "WA", "OH", "MA"]
OVERSIZED_BYTES = 150_000


@dataclass(frozen=True)
class Lead:
    lead_id: str
    kind: str
    body: bytes

    def expected(self) -> list[tuple[str, str]]:
        """(event id, type) in timeline order."""
        submitted_ms = id_timestamp_ms(self.lead_id)
        return [
            (event_id(self.lead_id, submitted_ms, step, seq), kind)
            for step, seq, kind in PATHS[self.kind]
        ]


def _valid(rng: random.Random, n: int, kind: str) -> dict[str, Any]:
    marker = {
        "buyer_rejected": "+reject", "buyer_error": "+error", "slow_buyer": "+slow",
        "inflight": "+lag",
    }  # fmt: skip
    return {
        "first_name": rng.choice(["Ada", "Grace", "Alan", "Edsger", "Barbara"]),
        "last_name": rng.choice(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov"]),
        "email": f"lead{n}{marker.get(kind, '')}@example.com",
        "phone_1": f"512{rng.randrange(2000000, 9999999)}",
        "state": rng.choice(UNSERVED if kind == "filtered" else SERVED),
        "postal_code": f"{rng.randrange(10000, 99999)}",
        "tcpa_consent": True,
    }


def lead_ids(run_id: str, count: int, start: int = 0) -> list[str]:
    """Lead ids known before submission (the source step keeps a valid id key as the lead id)."""
    import time

    ms = int(time.time() * 1000)
    return [derived_lead_id(ms, run_id, n) for n in range(start, start + count)]


def regular_leads(
    rng: random.Random, run_id: str, count: int, start: int = 0, kind: str | None = None
) -> list[Lead]:
    """Valid leads of the ordinary kinds (or all of one ``kind``), in a seeded mix."""
    weights = {"delivered": 70, "filtered": 15, "buyer_rejected": 10, "buyer_error": 5}
    out = []
    for n, lead_id in enumerate(lead_ids(run_id, count, start), start):
        chosen = kind or rng.choices(list(weights), list(weights.values()))[0]
        out.append(Lead(lead_id, chosen, orjson.dumps(_valid(rng, n, chosen))))
    return out


# -- malformed and oversized leads, drawn by hypothesis --------------------------------

_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # orjson takes 64-bit integers only
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_broken_field = st.sampled_from(["email", "phone_1", "state", "tcpa_consent", "first_name"])

MALFORMED = st.one_of(
    st.binary(max_size=300),  # not JSON at all (or, by chance, JSON that is not an object)
    st.text(max_size=200).map(str.encode),
    st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=4), max_leaves=8).map(
        orjson.dumps
    ),  # JSON, but not an object
    st.dictionaries(st.text(max_size=12), _json_scalar, max_size=8).map(orjson.dumps),
    st.tuples(_broken_field, _json_scalar).map(
        lambda bad: orjson.dumps({**_valid(random.Random(0), 0, "delivered"), bad[0]: bad[1]})
    ),  # a valid lead with one field replaced by anything
)


def _oversized(text: str) -> bytes:
    filler = (text or "x") * (OVERSIZED_BYTES // max(1, len(text or "x")) + 1)
    lead = _valid(random.Random(0), 0, "delivered")
    del lead["email"]  # required: rejected, whatever else it holds
    return orjson.dumps({**lead, "comments": filler[:OVERSIZED_BYTES]})


OVERSIZED = st.text(alphabet=string.printable, min_size=1, max_size=64).map(_oversized)


def draw(strategy: st.SearchStrategy[bytes], count: int, at_seed: int) -> list[bytes]:
    """``count`` reproducible examples of ``strategy``: hypothesis's own generator under a
    fixed seed, without its example database or shrinking (``.example()`` is neither
    seeded nor meant for this)."""
    drawn: list[bytes] = []

    @seed(at_seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(example: bytes) -> None:
        drawn.append(example)

    collect()
    return drawn[:count]


def rejected_by_source(flow: Flow) -> Callable[[bytes], bool]:
    """The source step's own (pure) decision: does it reject this body?"""
    step = flow.step("source")
    assert isinstance(step, SourceStep)

    def rejects(body: bytes) -> bool:
        sub = Submission(body, "0" * 26, 0, flow.id, flow.name, step.id, step.name)
        return not accept_submission(sub, step.settings).proceed

    return rejects


def has_nul(body: bytes) -> bool:
    """A NUL character, raw or JSON-escaped: Postgres cannot store it in text or JSONB (the
    timeline shows it as U+FFFD); the run's junk should hold one."""
    return b"\x00" in body or b"\\u0000" in body


def junk_leads(
    flow: Flow,
    run_id: str,
    malformed: int,
    oversized: int,
    at_seed: int,
    start: int,
) -> list[Lead]:
    """Malformed and oversized leads the source step must reject (others drawn are dropped)."""
    rejects = rejected_by_source(flow)
    drawn = draw(MALFORMED, malformed * 2, at_seed)
    bodies = [("malformed", b) for b in drawn if rejects(b)]
    bodies = bodies[:malformed]
    bodies += [("oversized", b) for b in draw(OVERSIZED, oversized, at_seed + 1) if rejects(b)]
    ids = lead_ids(run_id, len(bodies), start)
    return [Lead(i, kind, body) for i, (kind, body) in zip(ids, bodies, strict=True)]


def poison_messages(rng: random.Random, count: int) -> list[bytes]:
    """Hand-off records no step can decode: each must end up once in the dead-letter topic."""
    return [b"\xc3\x01chaos-poison-" + rng.randbytes(24).hex().encode() for _ in range(count)]
