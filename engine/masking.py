"""The one masking policy for lead data leaving the engine to a reader without ``pii:read``,
and secret masking for everyone.

Used wherever lead data leaves: the query API (``projectors.api``), exports (CSV and JSON
lines), stats and analytics rows, and the operator UI. Lead data arrives in three shapes:

* typed fields, masked by what their name says they hold (the last segment of a dotted
  name: ``lead.phone_1.area`` is a phone's part): an email keeps its first letter and
  domain, a phone its area code, an SSN its last four digits (what the source step
  stores already), a date of birth its year, a name its first letter; an address or a
  phone's identifying parts are masked whole;
* free text that quotes them (request and response bodies, reasons naming a rule's
  value): emails, phones and SSN-shaped runs by pattern, and in a recorded body the
  values of PII-named fields whether the body was JSON (``"email": "…"``),
  form-encoded (``email=…``) or XML (``<email>…</email>``);
* HTTP headers: secret-looking ones (authorization, cookies, keys) masked for everyone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MASK = "***"

_EMAIL_TEXT = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# 10 digits, optionally +1/1 and (area) and separators; not inside a longer number or word.
_PHONE_TEXT = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?\(?(\d{3})\)?[\s.-]?\d{3}[\s.-]?\d{4}(?![\w])")
_SSN_TEXT = re.compile(r"(?<![\w-])\d{3}-\d{2}-(\d{4})(?![\w-])")

# Field names (the last segment of a dotted name, case-insensitive) by what they hold.
_KINDS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"^e-?mail(_\d+)?$", re.I),
    "phone": re.compile(r"^(phone(_\d+)?|mobile|cell(_phone)?|home_phone|work_phone|fax)$", re.I),
    "ssn": re.compile(r"^(ssn|social_security(_number)?|tax_id)$", re.I),
    "dob": re.compile(r"^(dob|date_of_birth|birth_?date|birthday)$", re.I),
    "name": re.compile(r"^(first_name|last_name|full_name|middle_name|firstname|lastname)$", re.I),
    "address": re.compile(r"^(address(_\d+)?|street(_address)?|address_line_\d+)$", re.I),
}
# A PII field's parts that identify on their own (a phone's line number, an SSN's last
# four, an email's local part); its other parts (``lead.email.domain``, ``.valid``,
# ``lead.phone_1.area``) do not.
_IDENTIFYING_PARTS = re.compile(r"^(line|exchange|raw|number|last4|last_four|user|local|masked)$")
# The names as one alternation without groups of their own, for the body patterns.
_PII_NAMES = re.sub(r"\((?!\?)", "(?:", "|".join(p.pattern.strip("^$") for p in _KINDS.values()))
# A recorded body's PII-named fields, in its three formats: the value is group 2.
_JSON_FIELD = re.compile(rf'("(?:{_PII_NAMES})"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.I)
_FORM_FIELD = re.compile(rf"((?:^|[&?])(?:{_PII_NAMES})=)([^&\s]*)()", re.I | re.M)
_XML_FIELD = re.compile(rf"(<((?:{_PII_NAMES}))(?:\s[^>]*)?>)([^<]*)(</\2\s*>)", re.I)
_SECRET_HEADER = re.compile(
    r"authorization|cookie|api[-_]?key|token|secret|password|signature|credential", re.I
)


def _mask_email(value: str) -> str:
    masked = _EMAIL_TEXT.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", value)
    return masked if masked != value else MASK


def _mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return f"{digits[:3]}-{MASK}-****" if len(digits) == 10 else MASK


def _mask_ssn(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    # Nine digits, or an SSN the source step already masked to its last four.
    return f"***-**-{digits[-4:]}" if len(digits) in (4, 9) else MASK


def _mask_dob(value: str) -> str:
    year = re.search(r"(19|20)\d\d", value)
    return f"{year.group()}-**-**" if year else MASK


def _mask_name(value: str) -> str:
    value = value.strip()
    return f"{value[0]}{MASK}" if value else value


_BY_KIND: dict[str, Callable[[str], str]] = {
    "email": _mask_email,
    "phone": _mask_phone,
    "ssn": _mask_ssn,
    "dob": _mask_dob,
    "name": _mask_name,
    "address": lambda _: MASK,
    "part": lambda _: MASK,
}


def field_kind(name: str) -> str | None:
    """What a field named ``name`` holds (``email``, ``phone``, ``ssn``, ``dob``, ``name``,
    ``address``) by its last dotted segment, ``part`` for an identifying part of one
    (``lead.phone_1.line``: masked whole), None for anything else."""
    parts = name.split(".")
    for kind, pattern in _KINDS.items():
        if pattern.match(parts[-1]):
            return kind
    if (
        len(parts) > 1
        and _IDENTIFYING_PARTS.match(parts[-1])
        and any(pattern.match(parts[-2]) for pattern in _KINDS.values())
    ):
        return "part"
    return None


def _masked_value(name: str, value: str) -> str:
    return _BY_KIND[field_kind(name) or "part"](value) if value else value


def _json_or_form_field(match: re.Match[str]) -> str:
    prefix, value, suffix = match.groups()
    name = re.sub(r"[^A-Za-z0-9_-]", "", prefix.split(":")[0].split("=")[0])
    return f"{prefix}{_masked_value(name, value)}{suffix}"


def _xml_field(match: re.Match[str]) -> str:
    opening, name, value, closing = match.groups()
    return f"{opening}{_masked_value(name, value)}{closing}"


def mask_text(text: str) -> str:
    """Free text with its PII masked: PII-named fields of a JSON, form or XML body, then
    emails (first letter and domain kept), phones (area code kept) and SSN-shaped runs."""
    text = _JSON_FIELD.sub(_json_or_form_field, text)
    text = _FORM_FIELD.sub(_json_or_form_field, text)
    text = _XML_FIELD.sub(_xml_field, text)
    text = _EMAIL_TEXT.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", text)
    text = _SSN_TEXT.sub(lambda m: f"***-**-{m.group(1)}", text)
    return _PHONE_TEXT.sub(lambda m: f"{m.group(1)}-{MASK}-****", text)


# What a sealed value reads as when its key is gone or it does not open (engine.sealing):
# shown as is, it says more than a mask and holds nothing.
_MARKERS = frozenset({"[erased]", "[unreadable]"})


def _mask_field(kind: str, value: Any) -> Any:
    if isinstance(value, str) and value in _MARKERS:
        return value
    if isinstance(value, str):
        return _BY_KIND[kind](value) if value else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _BY_KIND[kind](str(value)) if kind in ("phone", "ssn") else MASK
    if isinstance(value, dict):
        return {k: _mask_field(kind, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_field(kind, v) for v in value]
    return value


def mask_pii(value: Any) -> Any:
    """``value`` with its PII masked: by field name in mappings, by pattern in text.

    Under a PII field name, nested values are masked as that field: a diff's
    ``{"lead.email": {"before": .., "after": ..}}`` masks both sides.
    """
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            kind = field_kind(str(k))
            out[k] = _mask_field(kind, v) if kind is not None else mask_pii(v)
        return out
    if isinstance(value, list):
        return [mask_pii(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_headers(value: Any) -> Any:
    """Every ``headers`` mapping in ``value`` with secret-looking header values replaced."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "headers" and isinstance(v, dict):
                out[k] = {
                    name: MASK if _SECRET_HEADER.search(str(name)) else val
                    for name, val in v.items()
                }
            else:
                out[k] = mask_headers(v)
        return out
    if isinstance(value, list):
        return [mask_headers(v) for v in value]
    return value


def for_reader(value: Any, *, sees_pii: bool) -> Any:
    """What a reader may see of ``value``: secrets never, PII only with ``pii:read``."""
    value = mask_headers(value)
    return value if sees_pii else mask_pii(value)
