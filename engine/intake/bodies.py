"""Lead bodies as sources send them (JSON, form-encoded, XML) turned into one flat dict.

Pure and shared: the HTTP endpoint uses it to answer a malformed body at
once, and the source step uses it to decide, so both give the same reason.
XML goes through defusedxml: no entity expansion, no external entities, no DTDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from engine.intake.config import BodyFormat

MEDIA_TYPES: dict[str, BodyFormat] = {
    "application/json": "json",
    "application/x-www-form-urlencoded": "form",
    "application/xml": "xml",
    "text/xml": "xml",
}


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a body is not a lead; becomes the ``source.rejected`` reason."""

    reason: str


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def body_format(content_type: str | None) -> BodyFormat | None:
    """The format a Content-Type names, or None for one leadflow does not read."""
    return MEDIA_TYPES.get(media_type(content_type))


def _json(body: bytes) -> dict[str, Any] | BodyProblem:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return BodyProblem(f"Invalid JSON: {exc.msg} at position {exc.pos}")
    if not isinstance(data, dict):
        return BodyProblem("Invalid lead: expected a JSON object")
    return data


def _form(body: bytes) -> dict[str, Any] | BodyProblem:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError) as exc:
        return BodyProblem(f"Invalid form body: {exc}")
    return dict(pairs)  # a repeated key: the last value wins, as in most form readers


def _xml(body: bytes) -> dict[str, Any] | BodyProblem:
    """``<lead><email>a@b.c</email>...</lead>``: each child element is one field."""
    try:
        root = fromstring(body)
    except DefusedXmlException as exc:
        return BodyProblem(f"Invalid XML: forbidden construct ({type(exc).__name__})")
    except Exception as exc:  # ParseError and friends: any parser complaint is a bad body
        return BodyProblem(f"Invalid XML: {exc}")
    fields: dict[str, Any] = {}
    for child in root:
        if len(child):
            return BodyProblem(f"Invalid lead: XML field <{child.tag}> has nested elements")
        fields[str(child.tag)] = (child.text or "").strip()
    return fields


def decode_body(body: bytes, content_type: str | None) -> dict[str, Any] | BodyProblem:
    """The lead's fields, or the problem. Anything that is not form or XML is read as
    JSON, which is what producers publishing to the intake topic send."""
    fmt = body_format(content_type)
    if fmt == "form":
        return _form(body)
    if fmt == "xml":
        return _xml(body)
    return _json(body)
