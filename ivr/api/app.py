"""Supervisor HTTP API (aiohttp): health, live queues, call records, the live dashboard.

Every route but ``/health`` and the dashboard's static files (``/``, ``/dashboard``,
``/static/dashboard.js|css``: they hold no data) needs ``Authorization: Bearer <token>``;
tokens are stored hashed in Redis with a role (viewer < supervisor < admin). ``/health`` answers
only up or down without a token, its detail with one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from ..store.redis_store import ROLES
from .clientip import ClientAddress
from .live import LiveFeed

if TYPE_CHECKING:
    from ..app.controller import Controller

log = logging.getLogger(__name__)

CONTROLLER = web.AppKey("controller", object)
CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)
LIVE_FEED = web.AppKey("live_feed", LiveFeed)
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
STATIC_DIR = Path(__file__).resolve().parent / "static"
DASHBOARD_PATHS = ("/", "/dashboard")
# the only files served from /static/ (exact names: no directory listing, no other file of the package)
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEALTH = "/health"
STREAM = "/api/v1/stream"
PUBLIC = {HEALTH, "/api/v1/openapi.json", *DASHBOARD_PATHS, *(f"/static/{name}" for name in STATIC_FILES)}
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
            refused = await _authenticate(request, needed)
            if refused is not None:
                return refused
        elif request.path == HEALTH and "Authorization" in request.headers:   # the detail: a viewer's
            try:
                refused = await _authenticate(request, "viewer")
            except RedisError:      # no token can be checked: up or down is all there is to say
                refused = None
            if refused is not None:
                return refused
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return json_error(exc.status, exc.reason)
        raise
    except RedisError as exc:
        log.warning("API: Redis unreachable on %s %s: %s", request.method, request.path, exc)
        return json_error(503, "Redis is unreachable: try again in a moment")
    except Exception:
        log.exception("API error on %s %s", request.method, request.path)
        return json_error(500, "internal error (logged)")


def client_address(request: web.Request) -> str:
    """The address failed logins are counted against (the trusted proxy's header, else the peer)."""
    resolver: ClientAddress = request.app[CLIENT_ADDRESS]
    return resolver.resolve(request.remote, request.headers.get(resolver.header))


async def _authenticate(request: web.Request, needed: str) -> web.Response | None:
    """Check the bearer token; None when it may go on (``request["auth"]`` set), else the refusal.

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
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    info = await ctl.store.verify_token(token)
    if info is None:
        api = ctl.cfg.api
        address = client_address(request)
        failures, left = await ctl.store.auth_failures(address)
        if failures >= api.auth_fail_limit:
            resp = json_error(429, f"too many failed logins from {address}: try again in {left or 1} s")
            resp.headers["Retry-After"] = str(left or 1)
            return resp
        count = await ctl.store.auth_failed(address, api.auth_fail_window)
        # one line per failure in a fixed form, for fail2ban (docs/fail2ban/ivr-api.conf)
        log.warning("API authentication failure from %s (%d in window) on %s %s",
                    address, count, request.method, request.path)
        return json_error(401, "unknown token")
    return _grant(request, info, needed)


def _grant(request: web.Request, info: dict[str, Any], needed: str) -> web.Response | None:
    """403 when the token's role is below ``needed``; else the request goes on as that token."""
    if ROLE_RANK.get(info.get("role", ""), -1) < ROLE_RANK[needed]:
        return json_error(403, f"this needs the {needed} role; token {info.get('name')!r} has {info.get('role')!r}")
    request["auth"] = info
    return None


async def _stream_ticket(request: web.Request, needed: str) -> web.Response | None:
    """Spend the stream ticket of the query string. A wrong one is not counted as a failed login: tickets are
    256-bit random values good for 30 s, and a browser that reconnects with a spent one must not lock its
    address out."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    info = await ctl.store.take_stream_ticket(request.query["ticket"][:200])
    if info is None:
        return json_error(401, "unknown, used or expired stream ticket: ask POST /api/v1/stream/ticket for another")
    return _grant(request, info, needed)


async def health(request: web.Request) -> web.Response:
    """Up or down for anyone (200 / 503 and the status word); with a viewer token, the detail (AMI's last
    error, menu errors, counters), which says too much about the system to be public."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    h = await ctl.health()
    body = h if "auth" in request else {"status": h["status"]}
    return web.json_response(body, status=200 if h["status"] == "ok" else 503,
                             headers={"Cache-Control": "no-store"})


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


def _call_uid(request: web.Request) -> str:
    """The {uid} of the path (400 as an HTTP error when it cannot be one)."""
    uid = request.match_info["uid"]
    if len(uid) > 64:
        raise web.HTTPBadRequest(reason="uniqueid too long")
    return uid


async def _call_record(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The {uid} of the path and its call record; 400 / 404 as HTTP errors."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    uid = _call_uid(request)
    record = await ctl.store.call_get(uid)
    if not record:
        raise web.HTTPNotFound(reason=f"no call {uid}")
    return uid, record


@requires("viewer")
async def call(request: web.Request) -> web.Response:
    _, record = await _call_record(request)
    return web.json_response(record)


@requires("viewer")
async def call_caller(request: web.Request) -> web.Response:
    """The caller of one call (in progress or finished) and their history: what the agent sees."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    uid, record = await _call_record(request)
    number = str(record.get("caller") or "")
    if not ctl.continuity.key(number):
        return json_error(404, f"call {uid} has no caller number (withheld or not a phone number)")
    about = await ctl.continuity.describe(number)
    about["calls"] = [c for c in about["calls"] if c.get("uid") != uid]
    vars_ = record.get("vars")
    return web.json_response({"uniqueid": uid, "this_call": {
        "path": record.get("path", []), "language": record.get("language", ""), "queue": record.get("queue", ""),
        "vars": json.loads(vars_) if isinstance(vars_, str) and vars_.startswith("{") else {},
        **ctl.continuity.context.get(uid, {})}, "caller": about})


@requires("viewer")
async def caller(request: web.Request) -> web.Response:
    """Everything known about one caller number: calls in progress, kept place, last notice, recent calls."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    try:
        return web.json_response(await ctl.continuity.describe(request.match_info["number"]))
    except ValueError as exc:
        return json_error(400, str(exc))


@requires("supervisor")
async def caller_flag(request: web.Request) -> web.Response:
    """Flag a caller number into a priority group: {"group": "medical", "note": "...", "hours": 72}.
    Their calls queue with the group's priority (continuity.priority_groups) until the flag ends."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    unknown = sorted(set(body) - {"group", "note", "hours"})
    if unknown:
        return json_error(400, f"{unknown[0]}: unknown field (known: group, hours, note)")
    group, note, hours = body.get("group"), body.get("note", ""), body.get("hours")
    if not isinstance(group, str) or not isinstance(note, str) or not (
            hours is None or (isinstance(hours, (int, float)) and not isinstance(hours, bool))):
        return json_error(400, "group: text; note: text; hours: a number")
    who = request["auth"].get("name", "")
    try:
        flag, old = await ctl.continuity.set_flag(request.match_info["number"], group, note=note, hours=hours,
                                                  by=who)
    except ValueError as exc:
        return json_error(400, str(exc))
    await ctl.store.audit(who, "caller.flag", flag["number"], old, {k: v for k, v in flag.items() if k != "number"})
    return web.json_response(flag)


@requires("supervisor")
async def caller_unflag(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    try:
        old = await ctl.continuity.clear_flag(request.match_info["number"])
    except ValueError as exc:
        return json_error(400, str(exc))
    if old is None:
        return json_error(404, "that number is not flagged")
    number = ctl.continuity.key(request.match_info["number"])
    await ctl.store.audit(request["auth"].get("name", ""), "caller.unflag", number, old, None)
    return web.json_response({"number": number, "flag": None})


@requires("supervisor")
async def reload_menus(request: web.Request) -> web.Response:
    from ..app.controller import reload_menus as do_reload
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    errors = await do_reload(ctl)
    return web.json_response({"loaded": sorted(ctl.menus.menus), "errors": errors, "version": ctl.menus.version})


@requires("viewer")
async def agents(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"agents": ctl.roster.describe()})


def _agent_json(ctl: "Controller", agent_id: str) -> dict[str, Any]:
    return next(a for a in ctl.roster.describe() if a["id"] == agent_id)


@requires("supervisor")
async def agent_add(request: web.Request) -> web.Response:
    """Add an agent (by default a novice volunteer) with a new SIP account; the password is shown once."""
    from ..asterisk.provision import ProvisionError, phone_configs
    from ..agents.roster import RosterError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    try:
        ctl.provisioner.check()
    except ProvisionError as exc:
        return json_error(409, str(exc))
    try:
        agent, password = await ctl.roster.add(body, by=request["auth"].get("name", ""))
    except RosterError as exc:
        return json_error(409 if "exists already" in str(exc) else 400, str(exc))
    except ProvisionError as exc:
        log.error("API: agent added but its SIP account is not applied yet: %s", exc)
        return json_error(503, str(exc))
    a = ctl.cfg.asterisk
    log.info("API: agent %s (%s, %s) added by %s", agent.id, agent.skill, agent.tier, request["auth"].get("name"))
    return web.json_response({
        "agent": _agent_json(ctl, agent.id),
        "sip": {"server": a.sip_host, "port": a.sip_port, "transport": "udp", "username": agent.id,
                "password": password, "realm": "asterisk"},
        "phone_configs": phone_configs(a.sip_host, a.sip_port, agent.id, password, agent.name or agent.id),
        "note": "the password is shown once; it is stored only as a digest",
    }, status=201)


async def _roster_change(agent_id: str, change: Awaitable[Any]) -> web.Response | None:
    """Await a roster change; the API's error answer when it fails (no such agent: 404, refused: 400)."""
    from ..agents.roster import RosterError
    try:
        await change
    except KeyError:
        return json_error(404, f"no agent {agent_id!r}")
    except RosterError as exc:
        return json_error(400, str(exc))
    return None


@requires("supervisor")
async def agent_update(request: web.Request) -> web.Response:
    """Change an agent's name, skill, team, tier, queues, languages or base penalty."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    body = await _json_body(request)
    failed = await _roster_change(agent_id, ctl.roster.update(agent_id, body, by=request["auth"].get("name", "")))
    if failed is not None:
        return failed
    ctl.balance.wake()
    return web.json_response(_agent_json(ctl, agent_id))


@requires("supervisor")
async def agent_remove(request: web.Request) -> web.Response:
    """Remove an agent added at run time, with its SIP account."""
    from ..asterisk.provision import ProvisionError
    from ..agents.roster import RosterError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    from ..asterisk.ami_client import AmiError
    agent_id = request.match_info["agent_id"]
    agent = ctl.roster.agents.get(agent_id)
    try:
        await ctl.roster.remove(agent_id, by=request["auth"].get("name", ""))
    except KeyError:
        return json_error(404, f"no agent {agent_id!r}")
    except RosterError as exc:
        return json_error(409, str(exc))
    except ProvisionError as exc:
        return json_error(503, str(exc))
    if agent is not None:   # out of every queue now: the balancing loop only manages agents on the roster
        for qname, q in list(ctl.state.queues.items()):
            for iface in agent.interfaces:
                if iface in q.members:
                    try:
                        await ctl.ami.action("QueueRemove", {"Queue": qname, "Interface": iface})
                    except AmiError as exc:
                        log.warning("API: removing %s from %s: %s", iface, qname, exc)
    ctl.balance.wake()
    return web.json_response({"id": agent_id, "removed": True})


@requires("supervisor")
async def agent_pin(request: web.Request) -> web.Response:
    """Set the PIN an agent keys in to log in or out from their phone (*81 / *82): {"pin": "4-8 digits"}."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    body = await _json_body(request)
    failed = await _roster_change(agent_id, ctl.roster.set_pin(agent_id, str(body.get("pin", "")),
                                                                by=request["auth"].get("name", "")))
    return failed or web.json_response({"id": agent_id, "pin": "set"})


async def _set_login(request: web.Request, logged_in: bool) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    failed = await _roster_change(agent_id, ctl.roster.set_logged_in(agent_id, logged_in,
                                                                      by=request["auth"].get("name", "")))
    if failed is not None:
        return failed
    ctl.balance.wake()
    log.info("API: agent %s logged %s by %s", agent_id, "in" if logged_in else "out", request["auth"].get("name"))
    return web.json_response({"id": agent_id, "logged_in": logged_in})


async def _set_pause(request: web.Request, paused: bool) -> web.Response:
    from ..asterisk.ami_client import AmiError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    agent = ctl.roster.agents.get(agent_id)
    if agent is None:
        return json_error(404, f"no agent {agent_id!r}")
    reason = ""
    if request.can_read_body:
        body = await _json_body(request)
        reason = str(body.get("reason", ""))[:60]
        if any(c in reason for c in "\r\n"):
            return json_error(400, "reason: no line breaks")
    fields = {"Interface": agent.interface, "Paused": "true" if paused else "false"}
    if reason:
        fields["Reason"] = reason
    try:
        await ctl.ami.action("QueuePause", fields)
    except AmiError as exc:
        return json_error(409 if "not there" in str(exc).lower() else 503, f"QueuePause: {exc}")
    await ctl.store.audit(request["auth"].get("name", ""), "agent.pause" if paused else "agent.unpause",
                          agent_id, None, reason or paused)
    return web.json_response({"id": agent_id, "paused": paused, "reason": reason})


@requires("supervisor")
async def agent_pause(request: web.Request) -> web.Response:
    return await _set_pause(request, True)


@requires("supervisor")
async def agent_unpause(request: web.Request) -> web.Response:
    return await _set_pause(request, False)


# ChanSpy options: q no beep or name, E ends when the agent's call does; w the agent hears the coach and the
# caller does not; B the coach speaks to both. Fixed sets: nothing from the request reaches the dialplan.
COACH_MODES = {"listen": "qE", "whisper": "qEw", "barge": "qEB"}


@requires("supervisor")
async def agent_coach(request: web.Request) -> web.Response:
    """Ring a coach's phone into an agent's call: {"coach": "<agent id>", "mode": "whisper" | "listen" | "barge"}.
    The coach hears the call; with whisper the agent hears the coach and the caller does not."""
    from ..core import names as ev
    from ..asterisk.ami_client import AmiError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    agent_id = request.match_info["agent_id"]
    body = await _json_body(request)
    coach_id, mode = str(body.get("coach", "")), str(body.get("mode", "whisper"))
    agent, coach = ctl.roster.agents.get(agent_id), ctl.roster.agents.get(coach_id)
    if agent is None:
        return json_error(404, f"no agent {agent_id[:20]!r}")
    if coach is None or coach_id == agent_id:
        return json_error(400, f"coach: another agent's id, got {coach_id[:20]!r}")
    if mode not in COACH_MODES:
        return json_error(400, f"mode: expected one of {', '.join(COACH_MODES)}, got {mode[:20]!r}")
    if not ctl.state.on_a_call(agent.interface):
        return json_error(409, f"agent {agent_id} is not on a call: there is nothing to coach")
    if ctl.state.on_a_call(coach.interface):
        return json_error(409, f"coach {coach_id} is on a call of their own")
    from ..campaigns.outbound import internal_channel
    try:   # the coach's own phone: an endpoint of ours, never the trunk (no outbound guard needed)
        await ctl.ami.action(ev.ORIGINATE, {
            "Channel": internal_channel(coach), "Context": "ivr-coach", "Exten": "s", "Priority": 1, "Async": "true",
            "Timeout": 30000, "CallerID": f"Coach {agent_id} <{agent_id}>",
            "Variable": [f"IVR_SPY={agent.interface}", f"IVR_SPY_OPTS={COACH_MODES[mode]}"]}, timeout=10)
    except AmiError as exc:
        return json_error(503, f"the coach's phone could not be rung: {exc}")
    who = request["auth"].get("name", "")
    await ctl.store.audit(who, "agent.coach", agent_id, None, {"coach": coach_id, "mode": mode})
    log.info("API: %s asked %s to %s agent %s", who, coach_id, mode, agent_id)
    return web.json_response({"agent": agent_id, "coach": coach_id, "mode": mode, "ringing": coach.interface})


@requires("supervisor")
async def agent_login(request: web.Request) -> web.Response:
    return await _set_login(request, True)


@requires("supervisor")
async def agent_logout(request: web.Request) -> web.Response:
    return await _set_login(request, False)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


@requires("viewer")
async def balance(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    d = ctl.balance.last_decision
    return web.json_response({
        "tiers": {q: {"open": t.open, "since": t.since} for q, t in ctl.balance.tiers.items()},
        "estimates": {q: (None if w == float("inf") else round(w, 1)) for q, w in (d.estimates if d else {}).items()},
        "desired": {q: dict(m) for q, m in (d.desired if d else {}).items()},
        "actions": ctl.balance.actions_by_kind, "ticks": ctl.balance.ticks, "errors": ctl.balance.errors,
        "policy": {k: getattr(ctl.balance.policy, k) for k in ctl.balance.policy.__dataclass_fields__},
    })


@requires("viewer")
async def banner_all(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response(await ctl.banner.all())


@requires("supervisor")
async def banner_set(request: web.Request) -> web.Response:
    from ..banner.service import BannerError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    unknown = set(body) - {"text"}
    if unknown:
        return json_error(400, f"unknown field {sorted(unknown)[0]!r} (expected: text)")
    text = body.get("text")
    if not isinstance(text, str):
        return json_error(400, "text: expected a string")
    try:
        data = await ctl.banner.set(request.match_info["lang"], text, by=request["auth"].get("name", ""))
    except BannerError as exc:
        return json_error(400, str(exc))
    return web.json_response(data)


@requires("supervisor")
async def banner_clear(request: web.Request) -> web.Response:
    from ..banner.service import BannerError
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    try:
        await ctl.banner.clear(request.match_info["lang"], by=request["auth"].get("name", ""))
    except BannerError as exc:
        return json_error(400, str(exc))
    return web.json_response({"lang": request.match_info["lang"], "banner": None})


@requires("viewer")
async def refund_get(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    ref = request.match_info["ref"]
    if not ref.isdigit() or len(ref) > 20:
        return json_error(400, "reference: digits only")
    rec = await ctl.store.refunds.get(ref)
    return web.json_response(rec) if rec else json_error(404, f"no refund request {ref}")


@requires("viewer")
async def refund_by_booking(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    booking = request.match_info["booking"]
    if not booking.isdigit() or len(booking) > 12:
        return json_error(400, "booking: digits only")
    rec = await ctl.store.refunds.by_booking(booking)
    return web.json_response(rec) if rec else json_error(404, f"no refund request for booking {booking}")


@requires("supervisor")
async def refund_set_status(request: web.Request) -> web.Response:
    """One decision: {"status": "approved", "note": "..."}; the customer's call is queued (``notice``)."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    ref = request.match_info["ref"]
    try:
        rec, notice = await ctl.refunds.decide(ref, str(body.get("status", "")), by=request["auth"].get("name", ""),
                                               note=str(body.get("note") or ""))
    except KeyError:
        return json_error(404, f"no refund request {ref}")
    except ValueError as exc:
        return json_error(400, str(exc))
    return web.json_response({**rec, "notice": notice})


@requires("supervisor")
async def refund_decisions(request: web.Request) -> web.Response:
    """Bulk decisions: {"decisions": [{"reference", "status", "note"}, ...]} or {"references": [...], "status",
    "note"}; each is taken on its own and reported on its own."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    if "decisions" in body:
        items = body["decisions"]
        if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
            return json_error(400, "decisions: expected a list of {reference, status, note}")
    elif isinstance(body.get("references"), list):
        items = [{"reference": r, "status": body.get("status"), "note": body.get("note")} for r in body["references"]]
    else:
        return json_error(400, "expected decisions: [...] or references: [...] with status")
    if len(items) > 1000:
        return json_error(400, f"at most 1000 decisions at once, got {len(items)}")
    results = await ctl.refunds.decide_many(items, by=request["auth"].get("name", ""))
    ok = sum(r["ok"] for r in results)
    return web.json_response({"decided": ok, "failed": len(results) - ok, "results": results})


@requires("supervisor")
async def refund_list(request: web.Request) -> web.Response:
    """Requests in one status (default received), oldest first, with the count of every status."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    q = request.query
    try:
        count, offset = int(q.get("count", "100")), int(q.get("offset", "0"))
    except ValueError:
        return json_error(400, "count and offset: integers")
    if not 1 <= count <= 1000 or offset < 0:
        return json_error(400, "count: 1-1000; offset: 0 or more")
    try:
        out = await ctl.store.refunds.list(q.get("status", "received"), count=count, offset=offset,
                                           group=q.get("group", ""))
    except ValueError as exc:
        return json_error(400, str(exc))
    out["counts"] = await ctl.store.refunds.counts()
    return web.json_response(out)


@requires("supervisor")
async def refund_create(request: web.Request) -> web.Response:
    """An agent records a request for a caller: {booking, number, lang, amount, group}; policy applies."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    lang = str(body.get("lang") or (ctl.cfg.languages[0] if ctl.cfg.languages else "en"))
    if lang not in ctl.cfg.languages:
        return json_error(400, f"lang: expected one of {', '.join(ctl.cfg.languages)}, got {lang!r}")
    try:
        rec = await ctl.refunds.create(str(body.get("booking", "")), caller=str(body.get("number") or "").lstrip("+"),
                                       lang=lang, amount=str(body.get("amount") or ""),
                                       group=str(body.get("group") or ""), source="api")
    except ValueError as exc:
        return json_error(400, str(exc))
    await ctl.store.audit(request["auth"].get("name", ""), "refund.create", rec["reference"], None,
                          {k: rec.get(k) for k in ("booking", "amount", "group")})
    return web.json_response(rec, status=201)


@requires("viewer")
async def callbacks_pending(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"callbacks": await ctl.store.callbacks.pending(500)})


@requires("viewer")
async def callback_get(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    cb_id = request.match_info["cb_id"]
    if not cb_id.isdigit() or len(cb_id) > 20:
        return json_error(400, "callback id: digits only")
    rec = await ctl.store.callbacks.get(cb_id)
    return web.json_response(rec) if rec else json_error(404, f"no callback {cb_id}")


@requires("viewer")
async def surveys(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"surveys": await ctl.store.surveys.recent(500)})


@requires("viewer")
async def report_reasons(request: web.Request) -> web.Response:
    """Calls by reason with their outcomes, escalations and dispositions (``?since=&until=&hours=&tz=``)."""
    from ..reports import service as reports
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    q = request.query
    unknown = set(q) - {"since", "until", "hours", "tz"}
    if unknown:
        return json_error(400, f"unknown parameter {sorted(unknown)[0]!r} (expected: since, until, hours, tz)")
    try:
        tz = reports.parse_tz(q.get("tz", "UTC"))
        start, end = reports.window_from(q, tz, "hour")
        data = await reports.reasons_report(ctl.store.redis, ctl.cfg.redis.prefix, start=start, end=end)
    except reports.ReportError as exc:
        return json_error(400, str(exc))
    data["dispositions"] = dict(ctl.cfg.dispositions)
    return web.json_response(data)


@requires("viewer")
async def dispositions(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"dispositions": dict(ctl.cfg.dispositions)})


@requires("supervisor")
async def call_disposition(request: web.Request) -> web.Response:
    """Set a call's disposition: {"disposition": "2" or "refund_requested", "note": "..."}."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    uid = _call_uid(request)
    body = await _json_body(request)
    try:
        rec = await ctl.outcomes.set_disposition(uid, str(body.get("disposition", "")),
                                                 by=request["auth"].get("name", ""), source="api",
                                                 note=str(body.get("note") or ""))
    except KeyError:
        return json_error(404, f"no call {uid}")
    except ValueError as exc:
        return json_error(400, str(exc))
    return web.json_response(rec)


@requires("supervisor")
async def feedback_list(request: web.Request) -> web.Response:
    """A team's open feedback items, oldest first (``?team=refunds``); without a team, the teams and counts."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    team = request.query.get("team", "")
    if not team:
        return web.json_response({"teams": await ctl.outcomes.feedback_counts()})
    if team not in ctl.outcomes.teams_known():
        return json_error(400, f"team: expected one of {', '.join(ctl.outcomes.teams_known())}, got {team[:40]!r}")
    return web.json_response({"team": team, "items": await ctl.outcomes.feedback_items(team)})


@requires("supervisor")
async def feedback_audio(request: web.Request) -> web.StreamResponse:
    """The recorded message of a feedback item (audio/wav)."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    item = await ctl.outcomes.feedback_get(request.match_info["item"])
    if not item or not item.get("file"):
        return json_error(404, "no recording for this item")
    path = ctl.outcomes.feedback_dir / Path(item["file"]).name
    if not path.is_file():
        return json_error(404, f"recording {item['file']} is missing from {ctl.outcomes.feedback_dir}")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


@requires("supervisor")
async def feedback_done(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request) if request.can_read_body else {}
    try:
        item = await ctl.outcomes.feedback_done(request.match_info["item"], request["auth"].get("name", ""),
                                                str(body.get("note") or ""))
    except KeyError:
        return json_error(404, f"no feedback item {request.match_info['item']}")
    return web.json_response(item)


@requires("viewer")
async def report(request: web.Request) -> web.Response:
    """Reports by hour or day (``?by=hour|day&since=&until=&hours=&tz=&sl_target=&format=json|csv``)."""
    from ..reports import service as reports
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    q = request.query
    unknown = set(q) - {"by", "since", "until", "hours", "tz", "sl_target", "format"}
    if unknown:
        return json_error(400, f"unknown parameter {sorted(unknown)[0]!r} (expected: by, since, until, hours, tz, "
                               "sl_target, format)")
    by = q.get("by", "hour")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        return json_error(400, f"format: expected json or csv, got {fmt!r}")
    try:
        if by not in reports.PERIODS:
            raise reports.ReportError(f"by: expected hour or day, got {by!r}")
        tz = reports.parse_tz(q.get("tz", "UTC"))
        start, end = reports.window_from(q, tz, by)
        try:
            sl_target = float(q.get("sl_target", "20"))
        except ValueError:
            raise reports.ReportError(f"sl_target: expected seconds, got {q.get('sl_target')!r}") from None
        if not 0 < sl_target <= 3600:
            raise reports.ReportError("sl_target: must be above 0 and at most 3600 seconds")
        data = await reports.report(ctl.store.redis, ctl.cfg.redis.prefix, start=start, end=end, by=by, tz=tz,
                                    sl_target=sl_target)
    except reports.ReportError as exc:
        return json_error(400, str(exc))
    if fmt == "csv":
        rows = data["rows"] + ([data["total"]] if data["rows"] else [])
        return web.Response(text=reports.to_csv(rows), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="report-{by}.csv"'})
    return web.json_response(data)


@requires("admin")
async def audit(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"audit": await ctl.store.audit_log(500)})


async def _live_picture(ctl: "Controller") -> dict[str, Any]:
    """What /api/v1/live answers and /api/v1/stream sends each second (built once a second for all: LiveFeed)."""
    data = ctl.live()
    data["callbacks_pending"] = await ctl.store.callbacks.pending_count()
    data["campaigns"] = await ctl.dialer.list()
    return data


@requires("viewer")
async def live(request: web.Request) -> web.Response:
    _, text = await request.app[LIVE_FEED].snapshot()
    return web.Response(text=text, content_type="application/json")


@requires("viewer")
async def stream_ticket(request: web.Request) -> web.Response:
    """A ticket for one event stream (``GET /api/v1/stream?ticket=``), good for 30 s: EventSource cannot send
    the Authorization header, and a token in a URL would end up in proxy and browser logs."""
    from ..store.redis_store import STREAM_TICKET_TTL
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    ticket = await ctl.store.create_stream_ticket(request["auth"], STREAM_TICKET_TTL)
    return web.json_response({"ticket": ticket, "expires_in": STREAM_TICKET_TTL,
                              "stream": f"{STREAM}?ticket={ticket}"}, status=201,
                             headers={"Cache-Control": "no-store"})


@requires("viewer")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the live picture once a second (EventSource: ``?ticket=`` from
    POST /api/v1/stream/ticket; other clients can send the Authorization header)."""
    import asyncio
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    feed = request.app[LIVE_FEED]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        while not ctl.stopping.is_set():
            _, text = await feed.snapshot()
            await resp.write(f"data: {text}\n\n".encode())
            await asyncio.sleep(1.0)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


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


@requires("viewer")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; scrape with a viewer token (bearer_token in the scrape config)."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    ctl.live()  # refresh the live gauges
    return web.Response(body=ctl.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document (public: it describes the routes, it holds no data)."""
    from .openapi import spec
    return web.json_response(spec(request.app, PUBLIC))


def build_app(controller: "Controller") -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    app[CONTROLLER] = controller
    api_cfg = controller.cfg.api if controller is not None else None
    app[CLIENT_ADDRESS] = (ClientAddress.from_config(api_cfg.trusted_proxies, api_cfg.client_ip_header)
                           if api_cfg is not None else ClientAddress())
    app[LIVE_FEED] = LiveFeed(lambda: _live_picture(controller))
    app.router.add_get(HEALTH, health)
    app.router.add_get("/api/v1/openapi.json", openapi)
    for path in DASHBOARD_PATHS:
        app.router.add_get(path, dashboard)
    for name in STATIC_FILES:
        app.router.add_get(f"/static/{name}", static_file)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/live", live)
    app.router.add_get(STREAM, stream)
    app.router.add_post("/api/v1/stream/ticket", stream_ticket)
    app.router.add_get("/api/v1/queues", queues)
    app.router.add_get("/api/v1/calls", calls)
    app.router.add_get("/api/v1/calls/{uid}", call)
    app.router.add_get("/api/v1/calls/{uid}/caller", call_caller)
    app.router.add_get("/api/v1/callers/{number}", caller)
    app.router.add_put("/api/v1/callers/{number}/flag", caller_flag)
    app.router.add_delete("/api/v1/callers/{number}/flag", caller_unflag)
    app.router.add_post("/api/v1/menus/reload", reload_menus)
    app.router.add_get("/api/v1/agents", agents)
    app.router.add_get("/api/v1/balance", balance)
    app.router.add_get("/api/v1/banner", banner_all)
    app.router.add_put("/api/v1/banner/{lang}", banner_set)
    app.router.add_delete("/api/v1/banner/{lang}", banner_clear)
    app.router.add_get("/api/v1/refunds/{ref}", refund_get)
    app.router.add_get("/api/v1/refunds/by-booking/{booking}", refund_by_booking)
    app.router.add_post("/api/v1/refunds/{ref}/status", refund_set_status)
    app.router.add_get("/api/v1/refunds", refund_list)
    app.router.add_post("/api/v1/refunds", refund_create)
    app.router.add_post("/api/v1/refunds/decisions", refund_decisions)
    app.router.add_get("/api/v1/callbacks", callbacks_pending)
    app.router.add_get("/api/v1/callbacks/{cb_id}", callback_get)
    app.router.add_get("/api/v1/surveys", surveys)
    app.router.add_get("/api/v1/audit", audit)
    app.router.add_get("/api/v1/reports", report)
    app.router.add_get("/api/v1/reports/reasons", report_reasons)
    app.router.add_get("/api/v1/dispositions", dispositions)
    app.router.add_post("/api/v1/calls/{uid}/disposition", call_disposition)
    app.router.add_get("/api/v1/feedback", feedback_list)
    app.router.add_get("/api/v1/feedback/{item}/audio", feedback_audio)
    app.router.add_post("/api/v1/feedback/{item}/done", feedback_done)
    from ..campaigns.routes import setup as campaign_routes   # imports this module: registered last
    campaign_routes(app)
    app.router.add_post("/api/v1/agents", agent_add)
    app.router.add_patch("/api/v1/agents/{agent_id}", agent_update)
    app.router.add_delete("/api/v1/agents/{agent_id}", agent_remove)
    app.router.add_post("/api/v1/agents/{agent_id}/login", agent_login)
    app.router.add_post("/api/v1/agents/{agent_id}/coach", agent_coach)
    app.router.add_put("/api/v1/agents/{agent_id}/pin", agent_pin)
    app.router.add_post("/api/v1/agents/{agent_id}/logout", agent_logout)
    app.router.add_post("/api/v1/agents/{agent_id}/pause", agent_pause)
    app.router.add_post("/api/v1/agents/{agent_id}/unpause", agent_unpause)
    return app
