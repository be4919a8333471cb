"""The operator UI's pages: HTML shells under ``/ui`` and their bundled script and styles.

A page carries no lead data: a browser navigation cannot send the key header,
so each page's script fetches ``/ui/api`` with the key from sessionStorage and
builds the DOM from text nodes. Ids in the path reach the page only through
autoescaped ``data-`` attributes. The Content-Security-Policy allows scripts
from ``/ui/static`` alone, so even a slip in escaping could not run inline code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader

from engine import __version__

_HERE = Path(__file__).parent
_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates"), autoescape=True, auto_reload=False
)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Read once: a fixed set of names, so no request path ever reaches the file system.
_STATIC = {
    p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix])
    for p in (_HERE / "static").iterdir()
    if p.suffix in _STATIC_TYPES
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(template: str, title: str, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(title=title, version=__version__, **context)
    return HTMLResponse(html, headers=_HEADERS)


@router.get("")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/")
def find_page() -> HTMLResponse:
    return _page("find.html", "Find a lead")


@router.get("/leads/{lead_id}")
def lead_page(lead_id: str) -> HTMLResponse:
    return _page("lead.html", "Lead timeline", lead_id=lead_id)


@router.get("/leads/{lead_id}/diff")
def diff_page(lead_id: str) -> HTMLResponse:
    return _page("diff.html", "Snapshot diff", lead_id=lead_id)


@router.get("/events/{event_id}")
def event_page(event_id: str) -> HTMLResponse:
    return _page("event.html", "Event inspector", event_id=event_id)


@router.get("/flows/{flow_id}")
def flow_page(flow_id: str) -> HTMLResponse:
    return _page("flow.html", "Flow dashboard", flow_id=flow_id)


@router.get("/exports")
def exports_page() -> HTMLResponse:
    return _page("exports.html", "Scheduled exports")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    found = _STATIC.get(name)
    if found is None:
        raise HTTPException(404, detail="Not found")
    body, media_type = found
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
