"""Agent routes: the roster, adding and changing agents, their PIN, login, pause, coaching."""

from __future__ import annotations

from aiohttp import web

from .http import check_fields, json_body, json_error, requires, text_field, who
from .services import AGENTS


@requires("viewer")
async def agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": request.app[AGENTS].describe()})


@requires("supervisor")
async def agent_add(request: web.Request) -> web.Response:
    """Add an agent (by default a novice volunteer) with a new SIP account; the password is shown once."""
    body = await json_body(request)
    if "id" in body and not isinstance(body["id"], str):   # absent: the next free id; null is not "absent"
        return json_error(400, "id: expected a string of 2-20 digits (leave it out for the next free id)")
    return web.json_response(await request.app[AGENTS].add(body, by=who(request)), status=201)


@requires("supervisor")
async def agent_update(request: web.Request) -> web.Response:
    """Change an agent's name, skill, team, tier, queues, languages or base penalty."""
    body = await json_body(request)
    return web.json_response(await request.app[AGENTS].update(request.match_info["agent_id"], body,
                                                              by=who(request)))


@requires("supervisor")
async def agent_remove(request: web.Request) -> web.Response:
    """Remove an agent added at run time, with its SIP account."""
    agent_id = request.match_info["agent_id"]
    await request.app[AGENTS].remove(agent_id, by=who(request))
    return web.json_response({"id": agent_id, "removed": True})


@requires("supervisor")
async def agent_pin(request: web.Request) -> web.Response:
    """Set the PIN an agent keys in to log in or out from their phone (*81 / *82): {"pin": "4-8 digits"}."""
    agent_id = request.match_info["agent_id"]
    body = await json_body(request)
    check_fields(body, ("pin",))
    await request.app[AGENTS].set_pin(agent_id, text_field(body, "pin"), by=who(request))
    return web.json_response({"id": agent_id, "pin": "set"})


async def _set_login(request: web.Request, logged_in: bool) -> web.Response:
    agent_id = request.match_info["agent_id"]
    await request.app[AGENTS].set_logged_in(agent_id, logged_in, by=who(request))
    return web.json_response({"id": agent_id, "logged_in": logged_in})


@requires("supervisor")
async def agent_login(request: web.Request) -> web.Response:
    return await _set_login(request, True)


@requires("supervisor")
async def agent_logout(request: web.Request) -> web.Response:
    return await _set_login(request, False)


async def _set_pause(request: web.Request, paused: bool) -> web.Response:
    service = request.app[AGENTS]
    agent_id = request.match_info["agent_id"]
    service.get(agent_id)   # 404 before the body is read
    reason = ""
    if request.can_read_body:
        body = await json_body(request)
        check_fields(body, ("reason",))
        reason = text_field(body, "reason", max_length=60)
    await service.set_paused(agent_id, paused, reason, by=who(request))
    return web.json_response({"id": agent_id, "paused": paused, "reason": reason})


@requires("supervisor")
async def agent_pause(request: web.Request) -> web.Response:
    return await _set_pause(request, True)


@requires("supervisor")
async def agent_unpause(request: web.Request) -> web.Response:
    return await _set_pause(request, False)


@requires("supervisor")
async def agent_coach(request: web.Request) -> web.Response:
    """Ring a coach's phone into an agent's call: {"coach": "<agent id>", "mode": "whisper" | "listen" | "barge"}.
    The coach hears the call; with whisper the agent hears the coach and the caller does not."""
    body = await json_body(request)
    check_fields(body, ("coach", "mode"))
    out = await request.app[AGENTS].coach(request.match_info["agent_id"], text_field(body, "coach"),
                                          text_field(body, "mode", "whisper"), by=who(request))
    return web.json_response(out)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/agents", agents)
    app.router.add_post("/api/v1/agents", agent_add)
    app.router.add_patch("/api/v1/agents/{agent_id}", agent_update)
    app.router.add_delete("/api/v1/agents/{agent_id}", agent_remove)
    app.router.add_post("/api/v1/agents/{agent_id}/login", agent_login)
    app.router.add_post("/api/v1/agents/{agent_id}/coach", agent_coach)
    app.router.add_put("/api/v1/agents/{agent_id}/pin", agent_pin)
    app.router.add_post("/api/v1/agents/{agent_id}/logout", agent_logout)
    app.router.add_post("/api/v1/agents/{agent_id}/pause", agent_pause)
    app.router.add_post("/api/v1/agents/{agent_id}/unpause", agent_unpause)
