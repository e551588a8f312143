"""Supervisor HTTP API (aiohttp): health, live queues, call records.

Every route but ``/health`` needs ``Authorization: Bearer <token>``; tokens are
stored hashed in Redis with a role (viewer < supervisor < admin).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from ..store.redis_store import ROLES

if TYPE_CHECKING:
    from ..controller import Controller

log = logging.getLogger(__name__)

CONTROLLER = web.AppKey("controller", object)
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
PUBLIC = {"/health"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def requires(role: str) -> Callable[[Handler], Handler]:
    """Mark a handler with the least role that may call it."""
    def wrap(handler: Handler) -> Handler:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler
    return wrap


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC:
            needed = getattr(handler, "required_role", "admin")
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return json_error(401, "missing bearer token (Authorization: Bearer <token>)")
            ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
            info = await ctl.store.verify_token(auth[7:].strip())
            if info is None:
                return json_error(401, "unknown token")
            if ROLE_RANK.get(info.get("role", ""), -1) < ROLE_RANK[needed]:
                return json_error(403, f"this needs the {needed} role; token {info.get('name')!r} has {info.get('role')!r}")
            request["auth"] = info
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return json_error(exc.status, exc.reason)
        raise
    except Exception:
        log.exception("API error on %s %s", request.method, request.path)
        return json_error(500, "internal error (logged)")


async def health(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    h = await ctl.health()
    return web.json_response(h, status=200 if h["status"] == "ok" else 503)


@requires("viewer")
async def queues(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response(ctl.state.snapshot())


@requires("viewer")
async def calls(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    try:
        count = int(request.query.get("count", "100"))
    except ValueError:
        return json_error(400, "count: expected an integer")
    if not 1 <= count <= 10_000:
        return json_error(400, "count: must be 1-10000")
    return web.json_response({"calls": await ctl.store.recent_calls(count)})


@requires("viewer")
async def call(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    uid = request.match_info["uid"]
    if len(uid) > 64:
        return json_error(400, "uniqueid too long")
    record = await ctl.store.call_get(uid)
    if not record:
        return json_error(404, f"no call {uid}")
    return web.json_response(record)


@requires("supervisor")
async def reload_menus(request: web.Request) -> web.Response:
    from ..controller import reload_menus as do_reload
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    errors = await do_reload(ctl)
    return web.json_response({"loaded": sorted(ctl.menus.menus), "errors": errors, "version": ctl.menus.version})


@requires("viewer")
async def agents(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"agents": ctl.roster.agents()})


async def _set_login(request: web.Request, logged_in: bool) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    try:
        ctl.roster.set_logged_in(agent_id, logged_in)
    except KeyError:
        return json_error(404, f"no agent {agent_id!r}")
    log.info("API: agent %s logged %s by %s", agent_id, "in" if logged_in else "out", request["auth"].get("name"))
    return web.json_response({"id": agent_id, "logged_in": logged_in})


@requires("supervisor")
async def agent_login(request: web.Request) -> web.Response:
    return await _set_login(request, True)


@requires("supervisor")
async def agent_logout(request: web.Request) -> web.Response:
    return await _set_login(request, False)


def build_app(controller: "Controller") -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    app[CONTROLLER] = controller
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/queues", queues)
    app.router.add_get("/api/v1/calls", calls)
    app.router.add_get("/api/v1/calls/{uid}", call)
    app.router.add_post("/api/v1/menus/reload", reload_menus)
    app.router.add_get("/api/v1/agents", agents)
    app.router.add_post("/api/v1/agents/{agent_id}/login", agent_login)
    app.router.add_post("/api/v1/agents/{agent_id}/logout", agent_logout)
    return app
