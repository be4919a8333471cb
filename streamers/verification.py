"""Verifying a destination before events go to it: write a probe object, read it back, delete it.

The probe is named like LeadConduit's (``PREFIX/leadflow_verification_FLOWID_
YYYYMMDDHHMMSSmmm.txt``) so an operator who finds one left behind (a delete
refused by a write-only policy) knows what it is. Verification exercises the
same calls the streamer and a reader of the bucket need: create-only write,
read, and delete; a grant missing for any of them is found at apply time,
not at the first lead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from engine.destinations import Destination
from engine.errors import ConfigError
from engine.objects.contract import ObjectStore, directory
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.settings import Settings
from streamers import layout

StoreOpener = Callable[[Destination, Settings], ObjectStore]
TEXT = "text/plain; charset=utf-8"


def probe_key(prefix: str, flow_id: str, now: datetime) -> str:
    """``PREFIX/leadflow_verification_FLOWID_YYYYMMDDHHMMSSmmm.txt`` at ``now`` (UTC)."""
    utc = now.astimezone(UTC)
    stamp = f"{utc:%Y%m%d%H%M%S}{utc.microsecond // 1000:03d}"
    return f"{directory(prefix)}{layout.VERIFICATION_PREFIX}{flow_id}_{stamp}.txt"


def verify_store(store: ObjectStore, prefix: str, flow_id: str, now: datetime) -> None:
    """Write, read back and delete a probe; ``DestinationError`` saying which step failed."""
    key = probe_key(prefix, flow_id, now)
    at = now.astimezone(UTC).isoformat(timespec="milliseconds")
    body = f"leadflow verification of flow {flow_id} at {at}\n"
    steps: list[tuple[str, Callable[[], object]]] = [
        ("write the probe object", lambda: store.put_if_absent(key, body.encode(), TEXT)),
        ("read the probe object back", lambda: store.get(key)),
        ("delete the probe object", lambda: store.delete(key)),
    ]
    for what, call in steps:
        try:
            got = call()
        except DestinationError as exc:
            raise DestinationError(store.name, f"could not {what} {key}: {exc.cause}") from exc
        # Another verification in the same millisecond may have written first
        # ("exists"): the body is a function of the key's flow and instant, so it matches.
        if what.startswith("read") and got != body.encode():
            raise DestinationError(store.name, f"the probe object {key} read back differs")


def verify_destination(
    destination: Destination,
    settings: Settings,
    flow_id: str,
    *,
    now: datetime | None = None,
    opener: StoreOpener | None = None,
) -> str | None:
    """None when ``destination`` passes verification, else why not (never a secret).

    Opening the store resolves its credential references, so a missing env var or
    secret file is reported here too, naming the reference, not the value.
    """
    opener = opener or (lambda d, s: open_store(d, s, threads=1))
    when = now or datetime.now(UTC)
    try:
        store = opener(destination, settings)
    except ConfigError as exc:
        return f"cannot open {destination.name}: {exc}"
    except DestinationError as exc:
        return exc.cause
    except Exception as exc:
        # An SDK's own message may quote a credential: only its type leaves here.
        return f"cannot open {destination.name}: unexpected {type(exc).__name__}"
    try:
        verify_store(store, destination.prefix, flow_id, when)
    except DestinationError as exc:
        return exc.cause
    except Exception as exc:
        return f"verification of {destination.name} failed: unexpected {type(exc).__name__}"
    finally:
        store.close()
    return None
