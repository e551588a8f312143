"""System routes: health, the OpenAPI document, the dashboard's page and files, menu reload, the audit log."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from .http import AUTH, DASHBOARD_PATHS, HEALTH, OPENAPI, PUBLIC, STATIC_FILES, json_error, requires
from .openapi_spec import spec
from .services import ACCESS, SYSTEM

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The dashboard loads its script and style from /static/ (no inline code), talks only to this origin.
DASHBOARD_CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'none'", "frame-ancestors 'none'",
])
STATIC_HEADERS = {
    "Content-Security-Policy": DASHBOARD_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


async def health(request: web.Request) -> web.Response:
    """Up or down for anyone (200 / 503 and the status word); with a viewer token, the detail (AMI's last
    error, menu errors, counters), which says too much about the system to be public."""
    h = await request.app[SYSTEM].health()
    body = h if AUTH in request else {"status": h["status"]}
    return web.json_response(body, status=200 if h["status"] == "ok" else 503,
                             headers={"Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document (public: it describes the routes, it holds no data)."""
    return web.json_response(spec(request.app, PUBLIC))


def _static(name: str, content_type: str) -> web.Response:
    try:
        body = (STATIC_DIR / name).read_bytes()
    except OSError:
        log.error("dashboard file %s is missing from the package (%s)", name, STATIC_DIR)
        return json_error(404, f"{name} is not installed")
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=STATIC_HEADERS)


async def dashboard(request: web.Request) -> web.Response:
    """The supervisor's live dashboard (public: the page holds no data, everything it shows needs a token)."""
    return _static("dashboard.html", "text/html")


async def static_file(request: web.Request) -> web.Response:
    name = request.path.removeprefix("/static/")   # routes are registered per file: always a key
    return _static(name, STATIC_FILES[name])


@requires("supervisor")
async def reload_menus(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SYSTEM].reload_menus())


@requires("admin")
async def audit(request: web.Request) -> web.Response:
    return web.json_response({"audit": await request.app[ACCESS].audit_log(500)})


def setup(app: web.Application) -> None:
    app.router.add_get(HEALTH, health)
    app.router.add_get(OPENAPI, openapi)
    for path in DASHBOARD_PATHS:
        app.router.add_get(path, dashboard)
    for name in STATIC_FILES:
        app.router.add_get(f"/static/{name}", static_file)
    app.router.add_post("/api/v1/menus/reload", reload_menus)
    app.router.add_get("/api/v1/audit", audit)
