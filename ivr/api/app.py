"""Supervisor HTTP API (aiohttp): the application factory and its middleware (errors, authentication).

Every route but ``/health`` and the dashboard's static files (``/``, ``/dashboard``,
``/static/dashboard.js|css``: they hold no data) needs ``Authorization: Bearer <token>``;
tokens are stored hashed in Redis with a role (viewer < supervisor < admin). ``/health`` answers
only up or down without a token, its detail with one.

``build_app(services)`` is given the services (``ivr/api/services.py``) by the composition root
(``ivr/app/controller.py``); the routes live in one module per feature (``routes_*.py`` here,
``ivr/campaigns/routes.py``), each reading only the services it calls.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..campaigns import routes as campaign_routes
from ..core.service_errors import ServiceError
from ..store.errors import StoreError
from ..store.redis_store import ROLES
from . import routes_agents, routes_banner, routes_callers, routes_live, routes_outcomes, routes_refunds
from . import routes_system, routes_webhooks
from .http import AUTH, HEALTH, PUBLIC, STREAM, Handler, json_error, requires
from .live import LiveFeed
from .services import ACCESS, CLIENT_ADDRESS, LIVE_FEED, Services, install

log = logging.getLogger(__name__)   # "ivr.api.app": the failed-login lines fail2ban reads name it

ROLE_RANK = {r: i for i, r in enumerate(ROLES)}

__all__ = ["build_app", "errors_and_auth", "json_error", "requires", "PUBLIC", "LIVE_FEED", "LiveFeed",
           "Services"]


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC:
            needed = getattr(handler, "required_role", "admin")
            if request.match_info.http_exception is not None:   # no route or no such method: any token may hear so
                needed = "viewer"
            refused = await _authenticate(request, needed)
            if refused is not None:
                return refused
        elif request.path == HEALTH and "Authorization" in request.headers:   # the detail: a viewer's
            try:
                refused = await _authenticate(request, "viewer")
            except StoreError:      # no token can be checked: up or down is all there is to say
                refused = None
            if refused is not None:
                return refused
        return await handler(request)
    except ServiceError as exc:
        return json_error(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            resp = json_error(exc.status, exc.reason)
            for header in ("Allow", "Retry-After"):   # RFC 9110: a 405 names the methods the resource allows
                if header in exc.headers:
                    resp.headers[header] = exc.headers[header]
            return resp
        raise
    except StoreError as exc:
        log.warning("API: Redis unreachable on %s %s: %s", request.method, request.path, exc)
        return json_error(503, "Redis is unreachable: try again in a moment")
    except Exception:
        log.exception("API error on %s %s", request.method, request.path)
        return json_error(500, "internal error (logged)")


def client_address(request: web.Request) -> str:
    """The address failed logins are counted against (the trusted proxy's header, else the peer)."""
    resolver = request.app[CLIENT_ADDRESS]
    return resolver.resolve(request.remote, request.headers.get(resolver.header))


async def _authenticate(request: web.Request, needed: str) -> web.Response | None:
    """Check the bearer token; None when it may go on (``request[AUTH]`` set), else the refusal.

    A valid token is checked first and always accepted: only failures are counted, against the client's
    address, so a locked-out address (or a shared proxy) never shuts out the supervisors and Prometheus.
    Tokens are 256-bit random values: the limit keeps guessers' noise down, it is not what makes them safe.
    """
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if request.path == STREAM and not token:    # EventSource cannot send headers: a ticket in the URL instead
        if "token" in request.query:
            return json_error(401, "a token in the URL is refused (it ends up in logs): POST /api/v1/stream/ticket "
                                   "with it, then open /api/v1/stream?ticket=...")
        if "ticket" in request.query:
            return await _stream_ticket(request, needed)
    if not token:
        return json_error(401, "missing bearer token (Authorization: Bearer <token>)")
    access = request.app[ACCESS]
    info = await access.verify(token)
    if info is None:
        address = client_address(request)
        wait = await access.locked_out(address)
        if wait:
            resp = json_error(429, f"too many failed logins from {address}: try again in {wait} s")
            resp.headers["Retry-After"] = str(wait)
            return resp
        count = await access.failed(address)
        # one line per failure in a fixed form, for fail2ban (docs/fail2ban/ivr-api.conf)
        log.warning("API authentication failure from %s (%d in window) on %s %s",
                    address, count, request.method, request.path)
        return json_error(401, "unknown token")
    return _grant(request, info, needed)


def _grant(request: web.Request, info: dict[str, Any], needed: str) -> web.Response | None:
    """403 when the token's role is below ``needed``; else the request goes on as that token."""
    if ROLE_RANK.get(info.get("role", ""), -1) < ROLE_RANK[needed]:
        return json_error(403, f"this needs the {needed} role; token {info.get('name')!r} has {info.get('role')!r}")
    request[AUTH] = info
    return None


async def _stream_ticket(request: web.Request, needed: str) -> web.Response | None:
    """Spend the stream ticket of the query string. A wrong one is not counted as a failed login: tickets are
    256-bit random values good for 30 s, and a browser that reconnects with a spent one must not lock its
    address out."""
    info = await request.app[ACCESS].take_ticket(request.query["ticket"])
    if info is None:
        return json_error(401, "unknown, used or expired stream ticket: ask POST /api/v1/stream/ticket for another")
    return _grant(request, info, needed)


def build_app(services: Services | None = None) -> web.Application:
    """The API application on ``services`` (None: the route table alone, for the OpenAPI document)."""
    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    install(app, services if services is not None else Services())
    routes_system.setup(app)
    routes_live.setup(app)
    routes_callers.setup(app)
    routes_agents.setup(app)
    routes_banner.setup(app)
    routes_refunds.setup(app)
    routes_outcomes.setup(app)
    campaign_routes.setup(app)
    routes_webhooks.setup(app)
    return app
