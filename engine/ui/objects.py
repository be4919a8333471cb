"""Where an event's raw object lives in the flow's destinations, and whether it is there yet.

Only per-event destinations (``format: json``) hold one object per event;
batched ones hold it inside a file named by Kafka offsets, which the UI does
not chase. The flow comes from the registry the API already reads, or from
the configured flow file (what ``leadflow demo`` and ``run -f`` use).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import Request

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.flows import Flow, load_flow
from engine.objects.contract import ObjectStore
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError, ObjectNotFoundError
from engine.runtime.flow_catalog import FlowCatalog
from engine.settings import Settings
from streamers.layout import event_key, time_event_key


async def flow_for(request: Request, flow_id: str) -> Flow | None:

    settings: Settings = request.app.state.settings
    catalog = getattr(request.app.state, "ui_flow_catalog", None)
    if catalog is None:
        catalog = request.app.state.ui_flow_catalog = FlowCatalog(settings)
    try:
        flow = await catalog.get(flow_id)
    except LeadflowError:
        flow = None
    if flow is None and settings.flow_file.exists():
        local = await asyncio.to_thread(load_flow, settings.flow_file)
        flow = local if local.id == flow_id else None
    return flow


def object_key(dest: Destination, event: dict[str, Any]) -> str:
    if dest.layout == "time":
        when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        return time_event_key(dest.prefix, event["flow_id"], when, event["lead_id"], event["id"])
    return event_key(dest.prefix, event["lead_id"], event["id"])


def _store(request: Request, dest: Destination) -> ObjectStore:
    stores: dict[str, ObjectStore] = request.app.state.__dict__.setdefault("ui_stores", {})
    name = dest.model_dump_json()
    if name not in stores:
        stores[name] = open_store(dest, request.app.state.settings, threads=2)
    return stores[name]


def _present(store: ObjectStore, key: str) -> bool | None:
    try:
        store.metadata(key)
    except ObjectNotFoundError:
        return False
    except DestinationError:
        return None  # the store did not answer: unknown, not absent
    return True


async def locate(request: Request, event: dict[str, Any]) -> dict[str, Any]:
    """Every per-event destination's URI for ``event`` and whether the object exists."""
    flow = await flow_for(request, event["flow_id"])
    if flow is None:
        return {"objects": [], "note": f"Flow {event['flow_id']} is not known to this server."}
    settings: Settings = request.app.state.settings
    objects = []
    for dest in flow.destinations:
        if not dest.enabled or dest.format != "json":
            continue
        key = object_key(dest, event)
        present = await asyncio.to_thread(_present, _store(request, dest), key)
        scheme = "s3" if dest.kind == "s3" else "azure"
        url = None
        if dest.kind == "s3" and settings.s3_endpoint_url:
            url = f"{settings.s3_endpoint_url.rstrip('/')}/{dest.bucket}/{key}"
        objects.append({"uri": f"{scheme}://{dest.bucket}/{key}", "present": present, "url": url})
    return {"objects": objects, "note": None}
