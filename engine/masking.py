"""PII masking for readers without the ``pii`` scope, and secret masking for everyone.

Lead data reaches the UI in three shapes: typed fields (``lead.email``,
``lead.phone_1`` and their parts), free text that quotes them (request and
response bodies, reasons naming a rule's value) and HTTP headers. Fields are
masked by name; text by pattern, since a body is a string the engine recorded
as it was sent; secret headers are masked whatever the reader's scopes.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_EMAIL_TEXT = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# 10 digits, optionally +1/1 and (area) and separators; not inside a longer number or word.
_PHONE_TEXT = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?(\d{4})(?![\w])")
# lead.email, lead.phone_1, phone, and the phone's identifying parts; not lead.email.domain.
_PII_FIELD = re.compile(
    r"(^|\.)(e-?mail|phone(_\d+)?|mobile|ssn)(\.(line|exchange|raw|number|last4))?$", re.I
)
_SECRET_HEADER = re.compile(
    r"authorization|cookie|api[-_]?key|token|secret|password|signature|credential", re.I
)


def mask_text(text: str) -> str:
    """Emails keep their first letter and domain, phones their last four digits."""
    text = _EMAIL_TEXT.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", text)
    return _PHONE_TEXT.sub(lambda m: f"{MASK}-{MASK}-{m.group(1)}", text)


def _mask_field(value: Any) -> Any:
    if isinstance(value, str):
        masked = mask_text(value)
        return masked if masked != value else MASK
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MASK
    return mask_pii(value, pii_field=True)


def mask_pii(value: Any, *, pii_field: bool = False) -> Any:
    """``value`` with every email and phone masked: by field name in mappings, by pattern in text.

    Under a PII field name, nested values are masked too: a diff's
    ``{"lead.email": {"before": .., "after": ..}}`` masks both sides.
    """
    if isinstance(value, dict):
        return {
            k: _mask_field(v) if pii_field or _PII_FIELD.search(str(k)) else mask_pii(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_field(v) if pii_field else mask_pii(v) for v in value]
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
    """What a reader may see of ``value``: secrets never, PII only with the ``pii`` scope."""
    value = mask_headers(value)
    return value if sees_pii else mask_pii(value)
