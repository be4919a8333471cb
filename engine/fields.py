"""Typed lead fields: parse a submitted value into a normal form and its components.

Each parser returns a ``Parsed``: the normalised value, its components (kept in
the snapshot as ``lead.<field>.<component>``), and a problem when the value is
not valid for its type. Invalid optional values are kept with ``valid: false``,
as LeadConduit does; invalid required values reject the lead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Scalar = bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class Parsed:
    value: Scalar
    components: dict[str, Scalar] = field(default_factory=dict)
    problem: str | None = None


_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+)$"
)
_TOLLFREE = {"800", "833", "844", "855", "866", "877", "888"}
US_STATES = {
    "AL": "alabama",
    "AK": "alaska",
    "AZ": "arizona",
    "AR": "arkansas",
    "CA": "california",
    "CO": "colorado",
    "CT": "connecticut",
    "DE": "delaware",
    "DC": "district of columbia",
    "FL": "florida",
    "GA": "georgia",
    "HI": "hawaii",
    "ID": "idaho",
    "IL": "illinois",
    "IN": "indiana",
    "IA": "iowa",
    "KS": "kansas",
    "KY": "kentucky",
    "LA": "louisiana",
    "ME": "maine",
    "MD": "maryland",
    "MA": "massachusetts",
    "MI": "michigan",
    "MN": "minnesota",
    "MS": "mississippi",
    "MO": "missouri",
    "MT": "montana",
    "NE": "nebraska",
    "NV": "nevada",
    "NH": "new hampshire",
    "NJ": "new jersey",
    "NM": "new mexico",
    "NY": "new york",
    "NC": "north carolina",
    "ND": "north dakota",
    "OH": "ohio",
    "OK": "oklahoma",
    "OR": "oregon",
    "PA": "pennsylvania",
    "RI": "rhode island",
    "SC": "south carolina",
    "SD": "south dakota",
    "TN": "tennessee",
    "TX": "texas",
    "UT": "utah",
    "VT": "vermont",
    "VA": "virginia",
    "WA": "washington",
    "WV": "west virginia",
    "WI": "wisconsin",
    "WY": "wyoming",
    "PR": "puerto rico",
    "GU": "guam",
    "VI": "virgin islands",
}
_STATE_BY_NAME = {name: code for code, name in US_STATES.items()}


def parse_string(raw: Any) -> Parsed:
    if isinstance(raw, dict | list):
        return Parsed(None, problem="expected text, got a structure")
    return Parsed(str(raw).strip())


def parse_email(raw: Any) -> Parsed:
    if not isinstance(raw, str):
        return Parsed(
            None, {"valid": False}, f"expected an email address, got {type(raw).__name__}"
        )
    text = raw.strip().lower()
    match = _EMAIL.match(text)
    if not match:
        return Parsed(text, {"valid": False}, "not an email address")
    return Parsed(text, {"valid": True, "domain": match.group(1)})


def parse_phone(raw: Any) -> Parsed:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return Parsed(None, {"valid": False}, f"expected a phone number, got {type(raw).__name__}")
    digits = re.sub(r"\D", "", str(raw))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return Parsed(digits, {"valid": False}, f"expected 10 digits, got {len(digits)}")
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    if area[0] in "01" or exchange[0] in "01":
        return Parsed(digits, {"valid": False}, "area code and exchange cannot start with 0 or 1")
    return Parsed(
        digits,
        {
            "valid": True,
            "area": area,
            "exchange": exchange,
            "line": line,
            "country_code": "US",
            "is_tollfree": area in _TOLLFREE,
        },
    )


def parse_state(raw: Any) -> Parsed:
    if not isinstance(raw, str):
        return Parsed(None, {"valid": False}, f"expected a US state, got {type(raw).__name__}")
    text = raw.strip()
    code = text.upper() if text.upper() in US_STATES else _STATE_BY_NAME.get(text.lower())
    if code is None:
        return Parsed(text, {"valid": False}, "not a US state")
    return Parsed(code, {"valid": True})


def parse_postal_code(raw: Any) -> Parsed:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return Parsed(None, {"valid": False}, f"expected a postal code, got {type(raw).__name__}")
    text = str(raw).strip()
    match = re.fullmatch(r"(\d{5})(?:-?(\d{4}))?", text)
    if not match:
        return Parsed(text, {"valid": False}, "not a US postal code")
    return Parsed(text, {"valid": True, "zip5": match.group(1), "plus4": match.group(2)})


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def parse_boolean(raw: Any) -> Parsed:
    if isinstance(raw, bool):
        return Parsed(raw)
    text = str(raw).strip().lower() if isinstance(raw, str | int) else ""
    if text in _TRUE:
        return Parsed(True)
    if text in _FALSE:
        return Parsed(False)
    return Parsed(None, problem="expected true or false")


def parse_number(raw: Any) -> Parsed:
    if isinstance(raw, bool):
        return Parsed(None, problem="expected a number, got a boolean")
    try:
        return Parsed(float(raw))
    except (TypeError, ValueError):
        return Parsed(None, problem="expected a number")


PARSERS: dict[str, Callable[[Any], Parsed]] = {
    "string": parse_string,
    "email": parse_email,
    "phone": parse_phone,
    "state": parse_state,
    "postal_code": parse_postal_code,
    "boolean": parse_boolean,
    "number": parse_number,
}
