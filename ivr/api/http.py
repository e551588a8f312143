"""Helpers every route module shares: error bodies, the role a handler needs, the JSON body, path checks.

Kept apart from ``app.py`` (the app factory and its middleware) so route modules, ``ivr/campaigns/routes.py``
among them, import these without importing the factory that imports them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def requires(role: str) -> Callable[[Handler], Handler]:
    """Mark a handler with the least role that may call it (read by the middleware and the OpenAPI document)."""
    def wrap(handler: Handler) -> Handler:
        setattr(handler, "required_role", role)  # noqa: B010 - an attribute on a function: mypy refuses the plain form
        return handler
    return wrap


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 400 as an HTTP error when it is not one."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


def check_fields(body: dict[str, Any], known: tuple[str, ...]) -> None:
    """400 as an HTTP error when the body has a field the route does not know (the OpenAPI document says
    ``additionalProperties: false``: a typo is refused, not silently ignored)."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise web.HTTPBadRequest(reason=f"unknown field {unknown[0][:40]!r} (known: {', '.join(known)})")


def text_field(body: dict[str, Any], name: str, default: str = "", *, max_length: int | None = None) -> str:
    """The string field ``name`` of a JSON body (``default`` when absent); 400 when it is not a string or is
    longer than ``max_length`` (refused, not cut: the document's maxLength is the contract)."""
    value = body.get(name, default)
    if not isinstance(value, str):
        raise web.HTTPBadRequest(reason=f"{name}: expected a string")
    if max_length is not None and len(value) > max_length:
        raise web.HTTPBadRequest(reason=f"{name}: at most {max_length} characters")
    return value


AUTH = web.RequestKey("auth", dict[str, Any])   # the token the middleware admitted: {name, role, ...}


def who(request: web.Request) -> str:
    """The name of the token the request came with (the middleware checked it)."""
    return str(request[AUTH].get("name", ""))


def call_uid(request: web.Request) -> str:
    """The {uid} of the path (400 as an HTTP error when it cannot be one)."""
    uid = request.match_info["uid"]
    if len(uid) > 64:
        raise web.HTTPBadRequest(reason="uniqueid too long")
    return uid


HEALTH = "/health"
STREAM = "/api/v1/stream"
OPENAPI = "/api/v1/openapi.json"
DASHBOARD_PATHS = ("/", "/dashboard")
# the only files served from /static/ (exact names: no directory listing, no other file of the package)
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# the routes open without a token (they hold no data; /health says only up or down without one)
PUBLIC = {HEALTH, OPENAPI, *DASHBOARD_PATHS, *(f"/static/{name}" for name in STATIC_FILES)}
