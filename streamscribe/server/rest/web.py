"""The browser dashboard: `index.html` at `/`, its scripts and styles at `/web/<name>`.

The page is plain HTML, CSS and ES modules kept flat in `streamscribe/web/` (no build step).
Only files that exist in that folder are served, by their bare name, with a content type a
browser accepts for module scripts and AudioWorklets. A Content-Security-Policy keeps the page
to its own origin: scripts from here only, connections to this server (HTTP and WebSocket),
audio from here or from blobs (recordings fetched with the key).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter()

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own page
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str) -> FileResponse:
    path = WEB_DIR / name
    kind = CONTENT_TYPES.get(path.suffix)
    if "/" in name or "\\" in name or name.startswith(".") or kind is None or not path.is_file():
        raise HTTPException(404, f"no page asset {name!r}: the dashboard lives at /")
    headers = dict(HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return FileResponse(path, media_type=kind, headers=headers)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The dashboard page (the service's JSON description is at /v1/info)."""
    return _file("index.html")


@router.get("/web/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    return _file(name)
