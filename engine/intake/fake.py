"""Realistic fake web-form leads, with a controlled share of bad ones.

Seeded, so a demo or a benchmark sees the same mix every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Katherine",
    "John",
    "Hedy",
    "Tim",
    "Sophie",
    "Guido",
    "Anita",
    "Niklaus",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Johnson",
    "McCarthy",
    "Lamarr",
    "Berners-Lee",
    "Wilson",
    "van Rossum",
    "Borg",
    "Wirth",
]
DOMAINS = ["example.com", "mail.example.org", "inbox.example.net", "example.io"]
# Weighted so most leads land in the demo flow's service area.
STATES = (
    ["TX"] * 6 + ["CA"] * 6 + ["FL"] * 4 + ["AZ", "NV", "CO", "GA", "NC", "NY", "OH", "WA", "PA"]
)
AREAS = ["512", "713", "214", "310", "415", "305", "602", "702", "303", "404", "704", "212"]


def fake_lead(rng: random.Random, n: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower().replace(' ', '')}{n}@{rng.choice(DOMAINS)}",
        "phone_1": f"({rng.choice(AREAS)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
        "state": rng.choice(STATES),
        "postal_code": f"{rng.randint(10000, 99999)}",
        "tcpa_consent": rng.random() > 0.03,
        "trustedform_cert_url": f"https://cert.trustedform.com/{rng.getrandbits(80):020x}",
    }


def _spoil(rng: random.Random, lead: dict[str, Any]) -> dict[str, Any] | str:
    kind = rng.choice(["missing_email", "bad_phone", "wrong_type", "not_json"])
    if kind == "missing_email":
        lead.pop("email")
    elif kind == "bad_phone":
        lead["phone_1"] = "555-12"
    elif kind == "wrong_type":
        lead["email"] = 12345
    else:
        return '{"first_name": "Broken", "email": '
    return lead


# Markers the demo's local services react to (engine.demo.buyer): a phone the
# phone check cannot find, a VoIP line the filter refuses, the service down.
_SERVICE_MARKERS = [("+unknown", 0.03), ("+voip", 0.04), ("+down", 0.01)]


def _mark(rng: random.Random, lead: dict[str, Any]) -> dict[str, Any]:
    for marker, share in _SERVICE_MARKERS:
        if rng.random() < share:
            local, _, domain = str(lead["email"]).partition("@")
            lead["email"] = f"{local}{marker}@{domain}"
            break
    return lead


def fake_leads(
    count: int, seed: int = 7, bad_share: float = 0.04
) -> Iterator[dict[str, Any] | str]:
    """Yields lead dicts, or raw text for leads that are not even JSON."""
    rng = random.Random(seed)
    for n in range(count):
        lead = _mark(rng, fake_lead(rng, n))
        yield _spoil(rng, lead) if rng.random() < bad_share else lead
