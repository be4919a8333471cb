"""Sealed values: a lead's sensitive fields encrypted under the lead's own data key.

Crypto-shredding: every lead has a 256-bit data key (``engine.state.keys`` stores it
wrapped by the master key), so deleting that one key makes every copy of the lead's
sensitive values unreadable at once - on the topics, in Postgres, in streamed objects.

A sealed value is a string, ``enc:v1:<key-id>:<base64url(nonce | AES-256-GCM(json))>``:
any field can hold one without a schema change, readers tell it apart by its prefix,
and opening gives back the value's JSON type. The key id is the lead id. The
authenticated data binds the ciphertext to its key id, so a value moved to another
lead does not open.

Pure functions only: the key I/O is the caller's (a handler, a reader), which passes
a lookup from key id to data key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import ConfigError, LeadflowError
from engine.masking import MASK, field_kind
from engine.settings import Settings

PREFIX = "enc:v1:"
ERASED = "[erased]"
UNREADABLE = "[unreadable]"
_NONCE = 12
TOKEN = re.compile(r"enc:v1:([0-9A-Za-z_-]{1,64}):([A-Za-z0-9_-]{22,})")
# Field names sealed whatever the flow declares (the last dotted segment's field name).
ALWAYS_SENSITIVE = frozenset(
    {"ssn", "social_security", "social_security_number", "dob", "date_of_birth", "birth_date"}
)


class MasterKeyError(ConfigError):
    """The master key is missing or not 32 bytes of base64; says so without the key."""


class SealingError(LeadflowError):
    """A value could not be sealed or opened (never carries the value or a key)."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps data keys. ``key_id`` names it (a hash prefix) for rotation."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"leadflow master key id:" + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key, in a traceback or a log
        return f"MasterKey({self.key_id})"


def _decode_master(text: str, where: str) -> MasterKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise MasterKeyError(f"{where} must hold 32 bytes, base64-encoded")
    return MasterKey(raw)


def load_master_key(settings: Settings) -> MasterKey | None:
    """The master key from ``LEADFLOW_MASTER_KEY`` or ``LEADFLOW_MASTER_KEY_FILE``, or None."""
    if settings.master_key is not None:
        return _decode_master(settings.master_key.get_secret_value(), "LEADFLOW_MASTER_KEY")
    if settings.master_key_file is not None:
        try:
            text = settings.master_key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(
                f"LEADFLOW_MASTER_KEY_FILE {settings.master_key_file} cannot be read"
                f" ({type(exc).__name__})"
            ) from None
        return _decode_master(text, f"LEADFLOW_MASTER_KEY_FILE {settings.master_key_file}")
    return None


def master_key_from_env() -> MasterKey | None:
    """The master key as a reader (the API, an export) finds it in the environment: the same
    variables as ``load_master_key``, read once per value (readers have no Settings at hand)."""
    return _cached_master(
        os.environ.get("LEADFLOW_MASTER_KEY"), os.environ.get("LEADFLOW_MASTER_KEY_FILE")
    )


@lru_cache(maxsize=4)
def _cached_master(text: str | None, path: str | None) -> MasterKey | None:
    if text:
        return _decode_master(text, "LEADFLOW_MASTER_KEY")
    if path:
        try:
            return _decode_master(
                Path(path).read_text(encoding="ascii"), "LEADFLOW_MASTER_KEY_FILE"
            )
        except (OSError, UnicodeDecodeError):
            raise MasterKeyError(f"LEADFLOW_MASTER_KEY_FILE {path} cannot be read") from None
        return _decode_master(text, "LEADFLOW_MASTER_KEY_FILE")
    return None


def require_master_key(settings: Settings, flow_id: str) -> MasterKey:
    """The master key, or a one-line ``MasterKeyError`` naming the flow that needs it."""
    key = load_master_key(settings) or master_key_from_env()
    if key is None:
        raise MasterKeyError(
            f"flow {flow_id} declares sensitive fields: set LEADFLOW_MASTER_KEY or"
            " LEADFLOW_MASTER_KEY_FILE (32 bytes, base64) - nothing is written unencrypted"
        )
    return key


def new_master_key_text() -> str:
    """A fresh master key as ``LEADFLOW_MASTER_KEY`` takes it (the demo's first run)."""
    return base64.b64encode(os.urandom(32)).decode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


@lru_cache(maxsize=4)
def _master_cipher(secret: bytes) -> AESGCM:
    """The master key's cipher, made once: a batch unwraps hundreds of data keys with it."""
    return AESGCM(secret)


def wrap_key(master: MasterKey, key_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + _master_cipher(master.secret).encrypt(
        nonce, data_key, b"leadflow-dk:" + key_id.encode()
    )


def unwrap_key(master: MasterKey, key_id: str, wrapped: bytes) -> bytes:
    try:
        return _master_cipher(master.secret).decrypt(
            wrapped[:_NONCE], wrapped[_NONCE:], b"leadflow-dk:" + key_id.encode()
        )
    except (InvalidTag, ValueError) as exc:
        raise SealingError(f"data key {key_id} does not unwrap with this master key") from exc


def seal(data_key: bytes, key_id: str, value: Any) -> str:
    """``value`` (any JSON value) sealed under ``key_id``'s data key.

    Deterministic: the nonce is a keyed hash of the value (a synthetic IV, with a nonce
    key derived from the data key), so one lead's value always seals to the same text.
    A lead's snapshots then differ only where its data did (``/changes`` diffs stay
    true) and a replayed step writes the same event; it shows only that two of one
    lead's sealed values are equal. Two different values never share a nonce (but for
    a 96-bit hash collision), which is what AES-GCM needs.
    """
    clear = orjson.dumps(value)
    aes, nonce_key = _cipher(data_key)
    nonce = hmac.digest(nonce_key, clear, "sha256")[:_NONCE]
    box = aes.encrypt(nonce, clear, key_id.encode())
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + box).decode().rstrip('=')}"


@lru_cache(maxsize=4096)  # a batch's leads: the cipher and nonce key made once per lead
def _cipher(data_key: bytes) -> tuple[AESGCM, bytes]:
    """The data key's cipher and its nonce key (a keyed hash of the data key)."""
    return AESGCM(data_key), hmac.digest(data_key, b"leadflow nonce key v1", "sha256")


def open_sealed(data_key: bytes, key_id: str, blob: str) -> Any:
    """The value a token's base64 part held; ``SealingError`` if it does not open."""
    try:
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        clear = _cipher(data_key)[0].decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode())
        return orjson.loads(clear)
    except (InvalidTag, ValueError, orjson.JSONDecodeError) as exc:
        raise SealingError(f"a value sealed under {key_id} does not open") from exc


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_ids(value: Any) -> set[str]:
    """Every key id a sealed value anywhere in a JSON-like ``value`` names."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if PREFIX in item:
                found.update(m.group(1) for m in TOKEN.finditer(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


# -- snapshots: which fields are sealed ------------------------------------------------


@lru_cache(maxsize=8192)  # a flow's snapshots repeat the same few hundred names
def sealed_field(name: str, sensitive: frozenset[str]) -> bool:
    """Whether a snapshot key (``lead.dob``, ``lead.dob.year``) holds a sensitive field."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] == "lead" and parts[1].lower() in sensitive


def parse_flag(name: str, value: Any) -> bool:
    """Whether a snapshot value is a typed field's parse flag (``lead.email.valid``,
    ``lead.phone_1.valid``: whether the value parsed, not who the person is): left clear.
    Sealed, each took a 77-character token (two per lead of the demo flow, a fifth of what
    sealing added to its events). Only that component, as ``engine.fields`` names it: any
    other boolean is sealed - a field's own (``lead.smoker``, declared sensitive), another
    component (``lead.phone_1.is_tollfree``), or a submitted key with a dot in it
    (``health.smoker`` is ``lead.health.smoker``)."""
    return value.__class__ is bool and name.endswith(".valid") and name.count(".") == 2


def seal_snapshot(
    snapshot: Mapping[str, Any],
    sensitive: frozenset[str],
    sealer: Callable[[Any], str],
    reuse: Mapping[str, tuple[Any, str]] | None = None,
) -> dict[str, Any]:
    """``snapshot`` with every sensitive field's value (and its parts but their flags:
    ``parse_flag``) sealed. ``reuse``: field -> (clear value, the token it was opened from);
    a field still holding that value gets that token back, which is exactly what sealing it
    again gives (sealing is deterministic) without the cost - a step changes few of the
    fields it reads."""
    known = reuse or {}

    def sealed(name: str, value: Any) -> Any:
        if (
            value is None
            or is_sealed(value)
            or not sealed_field(name, sensitive)
            or parse_flag(name, value)
        ):
            return value
        opened = known.get(name)
        if opened is not None and type(opened[0]) is type(value) and opened[0] == value:
            return opened[1]
        return sealer(value)

    return {k: sealed(k, v) for k, v in snapshot.items()}


def clear_strings(snapshot: Mapping[str, Any], sensitive: frozenset[str]) -> list[str]:
    """The clear text of a snapshot's sensitive values as a body may quote them, longest
    first; values under 4 characters (a flag, a day) would match too much to replace."""
    out = {
        v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in snapshot.items()
        if v is not None
        and not isinstance(v, bool)
        and sealed_field(k, sensitive)
        and not is_sealed(v)
    }
    return sorted((s for s in out if len(s) >= 4), key=len, reverse=True)


@lru_cache(maxsize=4096)
def _form_encoded(clear: str) -> str:
    return quote_plus(clear)


def seal_text(text: str, clears: Iterable[str], sealer: Callable[[Any], str]) -> str:
    """``text`` (a recorded request or response body) with each clear value replaced by
    its sealed form, as written or URL-encoded (a form body). One pass, longest value
    first: a token just written is never searched again (its base64 could hold a digit
    run that is another, shorter clear value)."""
    forms: dict[str, str] = {}
    for clear in clears:
        for form in (clear, _form_encoded(clear)):
            forms.setdefault(form, clear)
    present = sorted((f for f in forms if f in text), key=len, reverse=True)
    if not present:
        return text
    pattern = re.compile("|".join(re.escape(f) for f in present))
    return pattern.sub(lambda m: sealer(forms[m.group(0)]), text)


# -- opening for a reader ----------------------------------------------------------------

# key id -> data key; None: the key is gone (erased). Raising: cannot tell (unreadable).
KeyLookup = Callable[[str], bytes | None]


def _open_token(match: re.Match[str], lookup: KeyLookup) -> Any:
    key_id, blob = match.group(1), match.group(2)
    try:
        data_key = lookup(key_id)
        if data_key is None:
            return ERASED
        return open_sealed(data_key, key_id, blob)
    except Exception:  # a reader sees a marker, never an exception or a 500
        return UNREADABLE


def open_value(value: Any, lookup: KeyLookup) -> Any:
    """``value`` (JSON-like) with every sealed value opened: a whole-string token gives
    back its typed value, a token inside text its text; ``[erased]`` where the key is
    gone, ``[unreadable]`` where it does not open."""
    if isinstance(value, str):
        if PREFIX not in value:
            return value
        whole = TOKEN.fullmatch(value)
        if whole is not None:
            return _open_token(whole, lookup)

        def text(match: re.Match[str]) -> str:
            opened = _open_token(match, lookup)
            return opened if isinstance(opened, str) else orjson.dumps(opened).decode()

        return TOKEN.sub(text, value)
    if isinstance(value, dict):
        return {k: open_value(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [open_value(v, lookup) for v in value]
    return value


def _hidden(match: re.Match[str], lookup: KeyLookup) -> str:
    opened = _open_token(match, lookup)
    return opened if opened in (ERASED, UNREADABLE) else MASK


def _masked_open(value: Any, lookup: KeyLookup, name: str | None) -> Any:
    if isinstance(value, dict):
        return {k: _masked_open(v, lookup, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_open(v, lookup, name) for v in value]
    if isinstance(value, str) and PREFIX in value:
        whole = TOKEN.fullmatch(value)
        if whole is not None and name is not None and field_kind(name) is not None:
            return _open_token(whole, lookup)  # the masking policy masks it by its kind
        return TOKEN.sub(lambda m: _hidden(m, lookup), value)
    return value


def reveal(value: Any, lookup: KeyLookup, *, sees_pii: bool) -> Any:
    """``value`` opened for a reader, before ``engine.masking``: with ``pii:read`` every
    sealed value opened; without, only fields whose kind the masking policy masks (an
    email, an SSN: the reader sees its mask), every other sealed value ``***``. Either
    way ``[erased]`` where the key is gone and ``[unreadable]`` where it does not open."""
    if sees_pii:
        return open_value(value, lookup)
    return _masked_open(value, lookup, None)


# -- the person index ----------------------------------------------------------------------


def _index_key(master: MasterKey) -> bytes:
    return hmac.new(master.secret, b"leadflow person index v1", hashlib.sha256).digest()


def normalised(kind: str, value: str) -> str | None:
    """An email lower-cased and trimmed; a phone's ten digits; None if it is neither."""
    if kind == "email":
        text = value.strip().lower()
        return text if "@" in text else None
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return digits if len(digits) == 10 else None


def person_digest(master: MasterKey, kind: str, value: str) -> bytes | None:
    """The keyed hash (HMAC-SHA256 under a key derived from the master key) that finds a
    person's leads by email or phone without storing either; None for a malformed value."""
    norm = normalised(kind, value)
    if norm is None:
        return None
    return hmac.new(_index_key(master), f"{kind}:{norm}".encode(), hashlib.sha256).digest()
