"""Typed lead fields: parse a submitted value into a normal form and its components.

Each parser returns a ``Parsed``: the normalised value, its components (kept in
the snapshot as ``lead.<field>.<component>``), and a problem when the value is
not valid for its type. Invalid optional values are kept with ``valid: false``,
as LeadConduit does; invalid required values reject the lead.

Types whose clear value must never be stored (``MASKED_TYPES``: an SSN) parse
to their masked form, so the clear value cannot reach a snapshot, an event, a
projection or a streamed file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
MAX_EMAIL = 254  # RFC 5321: the longest address a mail server accepts
# Typed text travels in the snapshot of every later event of the lead: keep it bounded.
MAX_TEXT = 4096
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
    text = str(raw).strip()
    if len(text) > MAX_TEXT:
        return Parsed(text[:MAX_TEXT], problem=f"longer than {MAX_TEXT} characters")
    return Parsed(text)


def parse_email(raw: Any) -> Parsed:
    if not isinstance(raw, str):
        return Parsed(
            None, {"valid": False}, f"expected an email address, got {type(raw).__name__}"
        )
    text = raw.strip().lower()
    match = _EMAIL.match(text) if len(text) <= MAX_EMAIL else None
    if not match:
        return Parsed(text[:MAX_TEXT], {"valid": False}, "not an email address")
    return Parsed(text, {"valid": True, "domain": match.group(1)})


# LeadConduit's type hints: a trailing h, w, c or m (optionally in brackets).
_PHONE_TYPE_HINT = re.compile(r"\s*\(?([hwcm])\)?\s*$")
_PHONE_TYPES = {"h": "home", "w": "work", "c": "mobile", "m": "mobile"}
_PHONE_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*(\d{1,6})\s*$", re.IGNORECASE)


def parse_phone(raw: Any) -> Parsed:
    """A North American number: ``5125550123 x44 (m)`` keeps ten digits as its value,
    and its area, exchange, line, extension and type (from the hint) as components."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return Parsed(None, {"valid": False}, f"expected a phone number, got {type(raw).__name__}")
    text = str(raw).strip()
    known: dict[str, Scalar] = {}
    if hint := _PHONE_TYPE_HINT.search(text):
        known["type"] = _PHONE_TYPES[hint.group(1)]
        text = text[: hint.start()]
    if extension := _PHONE_EXTENSION.search(text):
        known["extension"] = extension.group(1)
        text = text[: extension.start()]
    digits = re.sub(r"\D", "", text)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return Parsed(
            digits[:MAX_TEXT], {"valid": False, **known}, f"expected 10 digits, got {len(digits)}"
        )
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    if area[0] in "01" or exchange[0] in "01":
        return Parsed(
            digits, {"valid": False, **known}, "area code and exchange cannot start with 0 or 1"
        )
    return Parsed(
        digits,
        {
            "valid": True,
            "prefix": "1",
            "country_code": "US",
            "area": area,
            "exchange": exchange,
            "line": line,
            "is_tollfree": area in _TOLLFREE,
            **known,
        },
    )


def parse_state(raw: Any) -> Parsed:
    if not isinstance(raw, str):
        return Parsed(None, {"valid": False}, f"expected a US state, got {type(raw).__name__}")
    text = raw.strip()
    code = text.upper() if text.upper() in US_STATES else _STATE_BY_NAME.get(text.lower())
    if code is None:
        return Parsed(text[:MAX_TEXT], {"valid": False}, "not a US state")
    return Parsed(code, {"valid": True})


def parse_postal_code(raw: Any) -> Parsed:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return Parsed(None, {"valid": False}, f"expected a postal code, got {type(raw).__name__}")
    text = str(raw).strip()
    match = re.fullmatch(r"(\d{5})(?:-?(\d{4}))?", text)
    if not match:
        return Parsed(text[:MAX_TEXT], {"valid": False}, "not a US postal code")
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


# Decimal notation only: float() would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def as_number(value: object) -> float | None:
    """A finite number from a number or from decimal text, else None (never a boolean)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str) and _NUMBER.fullmatch(text := value.strip()):
            number = float(text)
        else:
            return None
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def parse_number(raw: Any) -> Parsed:
    if isinstance(raw, bool):
        return Parsed(None, problem="expected a number, got a boolean")
    number = as_number(raw)
    if number is None:
        return Parsed(None, problem="expected a number")
    return Parsed(number)


# --- dates and times -------------------------------------------------------------

DATE_FORMATS = "expected YYYY-MM-DD, MM/DD/YYYY, ISO 8601 date and time, or epoch milliseconds"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)
_US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
# Eleven to thirteen digits is epoch milliseconds (1973 to 2286); shorter digit runs
# are refused rather than guessed at (8 digits could be YYYYMMDD, 10 epoch seconds).
_EPOCH_MS_TEXT = re.compile(r"-?\d{11,13}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment_from_epoch_ms(ms: float) -> datetime:
    if not math.isfinite(ms):
        raise ValueError("epoch milliseconds must be a finite number")
    try:
        return _EPOCH + timedelta(milliseconds=int(ms))
    except OverflowError:
        raise ValueError("epoch milliseconds out of range") from None


def read_moment(raw: object) -> date | datetime:
    """A date (no time given) or a datetime (aware when an offset or epoch ms was given,
    naive for a wall-clock time); raises ValueError saying what was expected."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"expected a date, got {type(raw).__name__}")
    if isinstance(raw, int | float):
        return moment_from_epoch_ms(raw)
    text = raw.strip().upper()  # ISO allows a lower-case 't' and 'z'; fromisoformat does not
    try:
        if _EPOCH_MS_TEXT.fullmatch(text):
            return moment_from_epoch_ms(int(text))
        if match := _US_DATE.fullmatch(text):
            return date(int(match[3]), int(match[1]), int(match[2]))
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
        if _ISO_DATETIME.fullmatch(text):
            return datetime.fromisoformat(text.replace(",", "."))
    except ValueError as exc:
        raise ValueError(f"not a calendar date: {exc}") from None
    raise ValueError(DATE_FORMATS)


def format_moment(moment: date | datetime) -> str:
    """ISO 8601: ``2024-01-15``, ``2024-01-15T14:30:45.123Z`` (aware, in UTC) or
    ``2024-01-15T14:30:45.123`` (a wall-clock time with no zone)."""
    if not isinstance(moment, datetime):
        return moment.isoformat()
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.isoformat(timespec="milliseconds")


def _kept(raw: Any) -> Scalar:
    """An invalid value as kept in the snapshot: text, bounded; structures are not kept."""
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        return str(raw).strip()[:MAX_TEXT]
    return None


def parse_date(raw: Any) -> Parsed:
    """A calendar date; a date and time keeps its date as written (epoch ms: in UTC)."""
    try:
        moment = read_moment(raw)
    except ValueError as exc:
        return Parsed(_kept(raw), {"valid": False}, str(exc))
    day = moment.date() if isinstance(moment, datetime) else moment
    return Parsed(
        day.isoformat(), {"valid": True, "year": day.year, "month": day.month, "day": day.day}
    )


def parse_datetime(raw: Any) -> Parsed:
    """A point in time, normalised to UTC when it has an offset; a bare date is midnight."""
    try:
        moment = read_moment(raw)
    except ValueError as exc:
        return Parsed(_kept(raw), {"valid": False}, str(exc))
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return Parsed(
        format_moment(moment),
        {"valid": True, "year": moment.year, "month": moment.month, "day": moment.day},
    )


# --- masked types ----------------------------------------------------------------

_NEVER_ISSUED = "area 000, 666 or 900-999, group 00 and serial 0000 are never issued"


def parse_ssn(raw: Any) -> Parsed:
    """A US social security number, masked: value and ``masked`` are ``***-**-6789``.

    Only the last four digits survive (LeadConduit's first_three and middle_two
    would, with them, be the whole number)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return Parsed(
            None, {"valid": False}, f"expected a social security number, got {type(raw).__name__}"
        )
    # A JSON number has lost its leading zeros.
    digits = str(raw).zfill(9) if isinstance(raw, int) and raw >= 0 else re.sub(r"\D", "", str(raw))
    if len(digits) != 9:
        hidden = re.sub(r"\w", "*", str(raw).strip())[:32]
        return Parsed(
            hidden, {"valid": False, "masked": hidden}, f"expected 9 digits, got {len(digits)}"
        )
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    masked = f"***-**-{serial}"
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return Parsed(
            masked,
            {"valid": False, "masked": masked, "last_four": serial},
            f"not a valid SSN: {_NEVER_ISSUED}",
        )
    return Parsed(masked, {"valid": True, "masked": masked, "last_four": serial})


PARSERS: dict[str, Callable[[Any], Parsed]] = {
    "string": parse_string,
    "email": parse_email,
    "phone": parse_phone,
    "state": parse_state,
    "postal_code": parse_postal_code,
    "boolean": parse_boolean,
    "number": parse_number,
    "date": parse_date,
    "datetime": parse_datetime,
    "ssn": parse_ssn,
}

# The components each type can put in the snapshot, so rules can be checked at load.
COMPONENTS: dict[str, frozenset[str]] = {
    "string": frozenset(),
    "email": frozenset({"valid", "domain"}),
    "phone": frozenset(
        {
            "valid",
            "prefix",
            "country_code",
            "area",
            "exchange",
            "line",
            "is_tollfree",
            "type",
            "extension",
        }
    ),
    "state": frozenset({"valid"}),
    "postal_code": frozenset({"valid", "zip5", "plus4"}),
    "boolean": frozenset(),
    "number": frozenset(),
    "date": frozenset({"valid", "year", "month", "day"}),
    "datetime": frozenset({"valid", "year", "month", "day"}),
    "ssn": frozenset({"valid", "masked", "last_four"}),
}

# Types whose submitted value is masked everywhere, source.submitted included.
MASKED_TYPES = frozenset({"ssn"})
