"""A step's sealing: clear values inside the handler, sealed values on every topic.

A handler of a flow that declares sensitive fields opens its input's sealed values
before the pure step decides (a filter, a buyer's request see clear values) and seals
every event before it is encoded: the sensitive fields of ``vars``, and their clear
text wherever the event quotes it (a recorded request or response body, a reason).
The intake edge seals the raw body before it is published (``seal_body``), so no
topic ever holds a clear sensitive value.

Keys come from ``engine.state.keys.LeadKeys``, and only when a value is opened or
sealed: a step that reads no sensitive field and passes the snapshot on (a filter on the
state) never touches a key. ``prefetch`` notes a fetched batch's leads, and the first key
the batch needs fetches them all in one query; a loop that does not call it still works
(a query per lead, then the in-memory cache). A key store that cannot answer raises
``StateUnavailableError`` where the value is read, so the lead is retried - never decided
on values read as ``[unreadable]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterable, Mapping, ValuesView
from typing import Any, NoReturn

import orjson
from confluent_kafka import Message

from engine.events import LeadEvent
from engine.flows import Flow
from engine.intake.bodies import decode_body
from engine.sealing import (
    ERASED,
    PREFIX,
    TOKEN,
    UNREADABLE,
    KeyLookup,
    MasterKey,
    clear_strings,
    is_sealed,
    key_ids,
    open_value,
    parse_flag,
    require_master_key,
    seal,
    seal_snapshot,
    seal_text,
    sealed_field,
)
from engine.settings import Settings, get_settings
from engine.state.keys import LeadKeys
from engine.steps.base import Snapshot

_ABSENT = object()

# Texts that may quote a lead's values: a reason, and the failure a retry answers.
_QUOTING_TEXT = ("reason", "original_failure")


class OpenedSnapshot(dict[str, Any]):
    """A snapshot whose sealed values open when the step reads them (``[k]``, ``get``,
    ``items``, ``values``), once each. Most steps read a few fields (a filter: its rules'),
    so most sealed values are never opened - and since copying a dict (``{**snapshot}``,
    ``dict(snapshot)``) takes its stored values, the events a step writes carry the
    untouched values' tokens as they came: nothing to seal again.

    ``sealed_source``: the snapshot it was made from, when every sensitive value there is
    already sealed - an event that passes this snapshot on unchanged (a filter's) is
    written with that snapshot itself, so an ``EncodedSnapshot``'s Avro bytes are spliced
    in as they came rather than the whole map encoded again (the codec's fast path, which
    a sealing flow's steps would otherwise lose). Read-only, as that snapshot is: the
    source can never go stale behind it."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        opener: Callable[[str, str], Any],
        sealed_source: Snapshot | None = None,
    ) -> None:
        super().__init__(raw)
        self._opener = opener
        self._opened: dict[str, Any] = {}
        self.sealed_source = sealed_source
        # Field -> (clear value, its token) of each sealed value this handling opened: what
        # its events may quote in clear, and must seal (``LeadSealer.seal_event``'s ``read``).
        self.opened_tokens: dict[str, tuple[Any, str]] = {}

    def _read_only(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("an event's snapshot is read-only: build a new dict to change it")

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if not (isinstance(value, str) and value.startswith(PREFIX)):
            return value
        return self._open(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        # dict.get reads the stored value; a token is opened as ``[key]`` would (a step's
        # reads are mostly of unsealed fields: one lookup, no further call, for those).
        value = dict.get(self, key, _ABSENT)
        if value is _ABSENT:
            return default
        if not (isinstance(value, str) and value.startswith(PREFIX)):
            return value
        return self._open(key, value)

    def _open(self, key: str, token: str) -> Any:
        opened = self._opened
        if key not in opened:
            opened[key] = self._opener(key, token)
        return opened[key]

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # a view of opened values
        return {k: self[k] for k in self}.items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]  # a view of opened values
        return {k: self[k] for k in self}.values()


# The leads whose opened values are remembered for their events (a batch's, and more).
_OPENED_LEADS = 4096
# Snapshot keys whose sensitivity a sealer remembers.
_NAMES = 8192
# Snapshot shapes remembered (``LeadSealer._sensitive_keys``): a flow has a few per step.
_SHAPES = 256


class LeadSealer:
    """Seals and opens one flow's leads; one per handler (not thread-safe)."""

    def __init__(self, flow: Flow, keys: LeadKeys) -> None:
        self.flow = flow
        self.sensitive = flow.sensitive
        self.keys = keys
        # Per recent lead: field -> (clear value, the token it was opened from), so its
        # events reuse the tokens of what the step did not change (``seal_snapshot``).
        self._opened: OrderedDict[str, dict[str, tuple[Any, str]]] = OrderedDict()
        # Snapshot key -> whether it holds a sensitive field: a flow's snapshots repeat the
        # same few hundred names, and a dict answers faster than ``sealed_field``'s cache.
        self._names: dict[str, bool] = {}
        # A snapshot's keys, in order -> those of them sensitive (``_sensitive_keys``).
        self._shapes: dict[tuple[str, ...], tuple[str, ...]] = {}
        # The fetched batch's leads whose keys were not looked up yet (``prefetch``).
        self._pending: set[str] = set()

    @classmethod
    def for_flow(cls, flow: Flow, settings: Settings | None = None) -> LeadSealer | None:
        """The flow's sealer, None for a flow with nothing to seal; ``MasterKeyError`` (one
        line) when the flow seals and no master key is configured."""
        if not flow.seals:
            return None
        settings = settings or get_settings()
        master: MasterKey = require_master_key(settings, flow.id)
        return cls(flow, LeadKeys(settings, master))

    def close(self) -> None:
        self.keys.close()

    def prefetch(self, messages: Iterable[Message]) -> None:
        """Note a fetched batch's leads (their record keys): the first key the batch needs
        looks them all up in one query. No I/O here - a batch that needs no key makes none."""
        self._pending = {k.decode(errors="replace") for m in messages if (k := m.key())}

    def _keys(self, key_ids: set[str]) -> dict[str, bytes | None]:
        """The keys of ``key_ids`` (None: gone), with the batch's still pending leads in the
        same query; ``StateUnavailableError`` when the store cannot answer."""
        if self._pending:
            key_ids, self._pending = key_ids | self._pending, set()
        return self.keys.fetch(key_ids)

    def _sealer(self, lead_id: str) -> Callable[[Any], str]:
        """Seals values under the lead's key, made (or found) at the first value sealed: an
        event whose values all came sealed needs no key lookup at all."""
        found: list[bytes | None] = []

        def sealer(value: Any) -> str:
            if not found:
                if self._pending:
                    self._keys({lead_id})  # the batch's keys in one query, this one's among them
                found.append(self.keys.ensure(self.flow.id, [lead_id])[lead_id])
            key = found[0]
            if key is None:  # an erased lead replayed: nothing of it is kept, not even sealed
                return ERASED
            return seal(key, lead_id, value)

        return sealer

    def _lookup(self, value: Any) -> KeyLookup:
        """The keys ``value`` names, fetched now: a key store that cannot answer (or a master
        key that unwraps nothing) raises here, so the lead is retried - never decided on
        values read as ``[unreadable]``. Only a key that is gone opens as ``[erased]``."""
        keys = self._keys(key_ids(value))
        return lambda key_id: keys.get(key_id)

    def open_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` as the step reads it: each sealed value opens when it is read
        (``[erased]`` where the key is gone). Its key is fetched then, before it opens: a
        key store that cannot answer raises there (``StateUnavailableError``), so the lead
        is retried rather than decided on markers."""
        # Whether it holds tokens, and whether a sensitive field holds a clear value (declared
        # sensitive after the lead was sealed): then, passed on unchanged, it cannot be
        # written as it came. The sensitive names of a snapshot's keys are remembered by
        # its keys (a flow's snapshots have a few shapes), so only they are read; the
        # others are scanned only when no sensitive field holds a token.
        sealed = clear = False
        for k in self._sensitive_keys(snapshot):
            v = snapshot[k]
            if isinstance(v, str) and v.startswith(PREFIX):
                sealed = True
            elif v is not None and not parse_flag(k, v):
                clear = True
        if not sealed:
            sealed = any(isinstance(v, str) and v.startswith(PREFIX) for v in snapshot.values())
        if not sealed:
            return snapshot

        def opener(name: str, token: str) -> Any:
            whole = TOKEN.fullmatch(token)
            keys = self._keys({whole.group(1)} if whole is not None else key_ids(token))
            value = open_value(token, keys.get)  # every key it names is in ``keys`` now
            if whole is not None and value not in (ERASED, UNREADABLE):
                self._remember_opened(whole.group(1), name, value, token)
                opened.opened_tokens[name] = (value, token)
            return value

        opened = OpenedSnapshot(snapshot, opener, None if clear else snapshot)
        return opened

    def _sensitive_keys(self, snapshot: Snapshot) -> tuple[str, ...]:
        shape = tuple(snapshot)
        found = self._shapes.get(shape)
        if found is None:
            if len(self._shapes) >= _SHAPES:
                self._shapes.clear()  # snapshots that never repeat their keys
            names = self._names
            found = self._shapes[shape] = tuple(
                k for k in shape if (names[k] if k in names else self._sensitive_name(k))
            )
        return found

    def _sensitive_name(self, name: str) -> bool:
        if len(self._names) >= _NAMES:
            self._names.clear()  # names that never repeat (a flow writing ids as keys)
        sensitive = self._names[name] = sealed_field(name, self.sensitive)
        return sensitive

    def _remember_opened(self, lead_id: str, name: str, value: Any, token: str) -> None:
        fields = self._opened.get(lead_id)
        if fields is None:
            fields = self._opened[lead_id] = {}
            while len(self._opened) > _OPENED_LEADS:
                self._opened.popitem(last=False)
        fields[name] = (value, token)

    def open_body(self, body: bytes) -> bytes:
        """An intake body as ``seal_body`` wrote it (JSON with sealed fields, or one sealed
        string for a body that is not a mapping) with its sealed values opened."""
        if b"enc:v1:" not in body:
            return body
        text = body.decode("utf-8", errors="replace")
        lookup = self._lookup(text)
        whole = TOKEN.fullmatch(text)
        if whole is not None:
            opened = open_value(text, lookup)
            return opened.encode() if isinstance(opened, str) else body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body  # not as seal_body writes it: the source step judges it as it is
        return orjson.dumps(open_value(data, lookup))  # typed values back (a number stays one)

    def seal_body(self, lead_id: str, body: bytes, content_type: str) -> tuple[bytes, str]:
        """An intake body with its sensitive fields sealed, as JSON; the lead's key made and
        its email and phone indexed for erasure. A body that is not a mapping (the source
        rejects it, but it may still quote anything) is sealed whole, as one string."""
        data = decode_body(body, content_type)
        sealer = self._sealer(lead_id)
        if not isinstance(data, dict):
            return sealer(body.decode("utf-8", errors="replace")).encode(), content_type
        out = {
            k: sealer(v)
            if v not in (None, "") and not is_sealed(v) and k.strip().lower() in self.sensitive
            else v
            for k, v in data.items()
        }
        self._index(lead_id, data)
        return orjson.dumps(out), "application/json"

    def index_body(self, lead_id: str, body: bytes, content_type: str) -> None:
        """Index the person of a body the intake edge did not seal (a producer writing the
        intake topic itself), so erasure finds that lead too."""
        data = decode_body(body, content_type)
        if isinstance(data, dict):
            self._index(lead_id, data)

    def _index(self, lead_id: str, data: dict[str, Any]) -> None:
        emails = [str(v) for k, v in data.items() if "email" in k.lower() and isinstance(v, str)]
        phones = [str(v) for k, v in data.items() if "phone" in k.lower() and isinstance(v, str)]
        self.keys.index_person(self.flow.id, lead_id, emails, phones)

    def _clears(
        self,
        snapshot: Snapshot,
        opened: dict[str, tuple[Any, str]] | None,
        *,
        all_sealed: bool = False,
    ) -> list[str]:
        """The clear text a request, response or reason may quote: the snapshot's clear
        sensitive values (none where ``all_sealed``: a snapshot passed on as it came), and
        those the step opened (its vars hold their tokens)."""
        if all_sealed and not opened:
            return []  # the common case of a step that passes a lead on: nothing in clear
        values = {k: v for k, (v, _) in (opened or {}).items()}
        held = set() if all_sealed else set(clear_strings(snapshot, self.sensitive))
        return sorted(held | set(clear_strings(values, self.sensitive)), key=len, reverse=True)

    def _quotes(self, values: dict[str, str] | None) -> bool:
        """Whether ``values`` (a rule's failed values) holds a sensitive field's clear value:
        mostly not (a rule that passed quotes nothing, one that failed the state)."""
        if not values:
            return False
        names = self._names
        for k, v in values.items():
            sensitive = names[k] if k in names else self._sensitive_name(k)
            if sensitive and not is_sealed(v):
                return True
        return False

    def _rules_quote(self, out: dict[str, Any]) -> bool:
        """Whether any failed value of the event's rules (its own or its acceptance
        criteria's) must be sealed."""
        if isinstance(out.get("failed_values"), dict) and self._quotes(out["failed_values"]):
            return True
        criteria = out.get("acceptance_criteria")
        for rules in (out.get("rule_results"), criteria.get("rules") if criteria else None):
            if isinstance(rules, list) and any(self._quotes(r["failed_values"]) for r in rules):
                return True
        return False

    def _seal_rule_values(self, out: dict[str, Any], sealer: Callable[[str], str]) -> None:
        """The values that failed a rule (filter events, acceptance criteria) quote the
        snapshot: a sensitive field's value is sealed there as it is in ``vars``."""

        def sealed(values: dict[str, str]) -> dict[str, str]:
            if not self._quotes(values):
                return values  # shared, not copied: events are not changed after this
            return {
                k: sealer(v) if sealed_field(k, self.sensitive) and not is_sealed(v) else v
                for k, v in values.items()
            }

        def rules_sealed(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not any(self._quotes(r["failed_values"]) for r in rules):
                return rules
            return [{**r, "failed_values": sealed(r["failed_values"])} for r in rules]

        if isinstance(out.get("failed_values"), dict):
            out["failed_values"] = sealed(out["failed_values"])
        if isinstance(out.get("rule_results"), list):
            out["rule_results"] = rules_sealed(out["rule_results"])
        criteria = out.get("acceptance_criteria")
        if isinstance(criteria, dict):
            rules = rules_sealed(criteria["rules"])
            if rules is not criteria["rules"]:
                out["acceptance_criteria"] = {**criteria, "rules": rules}

    def seal_event(
        self, event: LeadEvent, *, whole_request_body: bool = False, read: Snapshot | None = None
    ) -> LeadEvent:
        """``event`` as it may be written: sensitive vars sealed, and their clear text
        sealed wherever the request, response or reason quotes it. ``whole_request_body``
        (the source's events: the body as a source sent it, which may quote anything,
        parsed or not) seals the recorded request body whole. ``read``: the snapshot the
        step decided on (``open_snapshot``'s), whose opened values the event may quote -
        known from it whatever the sealer's memory of recent leads has let go since (a
        calling step may hold more leads in flight than that memory)."""
        out: dict[str, Any] = dict(event)
        request = out.get("request")
        if whole_request_body and isinstance(request, dict):
            body = request.get("body")
            if isinstance(body, str) and body and not is_sealed(body):
                out["request"] = {**request, "body": self._sealer(event["lead_id"])(body)}
        # A plain dict of the stored values: an ``OpenedSnapshot`` passed on as the event's
        # vars (a step that changed nothing) would open every value when it is written.
        # But a snapshot passed on unchanged whose sensitive values all came sealed is
        # written as it came (``OpenedSnapshot.sealed_source``): no dict, no encoding again.
        given = out["vars"]
        source = given.sealed_source if isinstance(given, OpenedSnapshot) else None
        passed_on = source is not None
        snapshot: Snapshot = source if source is not None else dict(given)
        out["vars"] = snapshot
        if not passed_on and not any(sealed_field(k, self.sensitive) for k in snapshot):
            return out
        reuse = self._opened.get(event["lead_id"])
        for snap in (read, given):
            if isinstance(snap, OpenedSnapshot) and snap.opened_tokens:
                reuse = {**(reuse or {}), **snap.opened_tokens}
        if passed_on and not reuse:
            # Passed on as it came, and the step opened nothing of it: it never held a
            # sensitive value in clear, so nothing it wrote can quote one.
            return out
        quoting = (
            out.get("request")
            or out.get("response")
            or out.get("reason")
            or out.get("original_failure")
            or out.get("field_errors")
        )
        clears = self._clears(snapshot, reuse, all_sealed=passed_on) if quoting else []
        rules_quote = self._rules_quote(out)
        if passed_on and not clears and not rules_quote:
            return out  # a lead passed on as it came, quoting nothing in clear: as it is
        sealer = self._sealer(event["lead_id"])
        if not passed_on:  # else every sensitive value in it is sealed already: kept as is
            out["vars"] = seal_snapshot(snapshot, self.sensitive, sealer, reuse)
        # Values quoted in failed rules may be ones the step opened: sealed either way.
        if rules_quote:
            self._seal_rule_values(out, sealer)
        if clears:
            for part in ("request", "response"):
                recorded = out.get(part)
                if isinstance(recorded, dict):
                    out[part] = {
                        k: seal_text(v, clears, sealer)
                        if isinstance(v, str) and not is_sealed(v)
                        else v
                        for k, v in recorded.items()
                    }
            for text in _QUOTING_TEXT:
                if isinstance(out.get(text), str):
                    out[text] = seal_text(out[text], clears, sealer)
            if isinstance(out.get("field_errors"), list):
                out["field_errors"] = [
                    {**e, "message": seal_text(e["message"], clears, sealer)}
                    for e in out["field_errors"]
                ]
        return out
