"""GET /api/console and /api/console/{file}: the administrators' console, static files
served by the app itself (no separate hosting, no build step, nothing from a CDN).

The page and its files take the administrator role like the API they call (same-origin);
no function key, as a browser cannot keep one. The files are read once per process, on
first request, from functions/console_assets/ (shipped with the package). Every answer
carries a strict Content-Security-Policy (scripts, styles and API calls from this origin
only; no inline script or style; no framing) and an ETag with `Cache-Control: no-cache`,
so a browser revalidates each file (a 304 without a body when unchanged) and sees a new
deployment at once while the URLs stay plain.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func

from functions.http import requires, respond, route_id
from shared.domain.callers import Role
from shared.domain.errors import NotFound

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

ASSETS = Path(__file__).parent / "console_assets"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate on every use (If-None-Match): the URLs carry no version.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    """The console's files by name, read once (not at import: indexing stays quick)."""
    found: dict[str, Asset] = {}
    for path in sorted(ASSETS.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[path.name] = Asset(body=body, content_type=content_type, etag=etag)
    return found


def asset_response(req: func.HttpRequest, name: str) -> func.HttpResponse:
    """The named file (200), or 304 when the request's If-None-Match holds its ETag.
    Raises NotFound for a name the console does not have."""
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"the console has no file {name}")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in _etags(req.headers.get("If-None-Match")):
        return func.HttpResponse(status_code=304, headers=headers)
    return func.HttpResponse(
        asset.body, status_code=200, headers=headers, mimetype=asset.content_type, charset="utf-8"
    )


def _etags(if_none_match: str | None) -> set[str]:
    if not if_none_match:
        return set()
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


# Anonymous: the files hold no data and a browser cannot send a function key when it
# opens a page; the API calls the page makes are checked as any other caller's.
@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def console_page(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        return asset_response(req, INDEX)

    return await respond(handle)


@bp.route(route="console/{file}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def console_file(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        return asset_response(req, route_id(req, "file"))

    return await respond(handle)
