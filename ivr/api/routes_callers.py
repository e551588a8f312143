"""Call and caller routes: recent calls, one call, the caller of a call, a caller's history and priority flag."""

from __future__ import annotations

from aiohttp import web

from .http import call_uid, json_body, json_error, requires, who
from .services import CALLERS, OUTCOMES


@requires("viewer")
async def calls(request: web.Request) -> web.Response:
    try:
        count = int(request.query.get("count", "100"))
    except ValueError:
        return json_error(400, "count: expected an integer")
    return web.json_response({"calls": await request.app[OUTCOMES].recent_calls(count)})


@requires("viewer")
async def call(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OUTCOMES].call(call_uid(request)))


@requires("viewer")
async def call_caller(request: web.Request) -> web.Response:
    """The caller of one call (in progress or finished) and their history: what the agent sees."""
    return web.json_response(await request.app[CALLERS].of_call(call_uid(request)))


@requires("viewer")
async def caller(request: web.Request) -> web.Response:
    """Everything known about one caller number: calls in progress, kept place, last notice, recent calls."""
    return web.json_response(await request.app[CALLERS].describe(request.match_info["number"]))


@requires("supervisor")
async def caller_flag(request: web.Request) -> web.Response:
    """Flag a caller number into a priority group: {"group": "medical", "note": "...", "hours": 72}.
    Their calls queue with the group's priority (continuity.priority_groups) until the flag ends."""
    body = await json_body(request)
    unknown = sorted(set(body) - {"group", "note", "hours"})
    if unknown:
        return json_error(400, f"{unknown[0]}: unknown field (known: group, hours, note)")
    group, note, hours = body.get("group"), body.get("note", ""), body.get("hours")
    if not isinstance(group, str) or not isinstance(note, str) or not (
            hours is None or (isinstance(hours, (int, float)) and not isinstance(hours, bool))):
        return json_error(400, "group: text; note: text; hours: a number")
    flag = await request.app[CALLERS].flag(request.match_info["number"], group, note=note, hours=hours,
                                           by=who(request))
    return web.json_response(flag)


@requires("supervisor")
async def caller_unflag(request: web.Request) -> web.Response:
    number = await request.app[CALLERS].unflag(request.match_info["number"], by=who(request))
    return web.json_response({"number": number, "flag": None})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls", calls)
    app.router.add_get("/api/v1/calls/{uid}", call)
    app.router.add_get("/api/v1/calls/{uid}/caller", call_caller)
    app.router.add_get("/api/v1/callers/{number}", caller)
    app.router.add_put("/api/v1/callers/{number}/flag", caller_flag)
    app.router.add_delete("/api/v1/callers/{number}/flag", caller_unflag)
