"""Outcome routes: dispositions, surveys, the teams' feedback items, and the reports built on them."""

from __future__ import annotations

from aiohttp import web

from .http import call_uid, check_fields, json_body, json_error, requires, text_field, who
from .services import OUTCOMES, REPORTS
from ..reports.reporting import to_csv


@requires("viewer")
async def surveys(request: web.Request) -> web.Response:
    return web.json_response({"surveys": await request.app[OUTCOMES].surveys(500)})


@requires("viewer")
async def dispositions(request: web.Request) -> web.Response:
    return web.json_response({"dispositions": request.app[OUTCOMES].dispositions()})


@requires("supervisor")
async def call_disposition(request: web.Request) -> web.Response:
    """Set a call's disposition: {"disposition": "2" or "refund_requested", "note": "..."}."""
    uid = call_uid(request)
    body = await json_body(request)
    check_fields(body, ("disposition", "note"))
    rec = await request.app[OUTCOMES].set_disposition(uid, text_field(body, "disposition"), by=who(request),
                                                      note=text_field(body, "note"))
    return web.json_response(rec)


@requires("supervisor")
async def feedback_list(request: web.Request) -> web.Response:
    """A team's open feedback items, oldest first (``?team=refunds``); without a team, the teams and counts."""
    desk = request.app[OUTCOMES]
    team = request.query.get("team", "")
    if not team:
        return web.json_response({"teams": await desk.feedback_counts()})
    return web.json_response({"team": team, "items": await desk.feedback_items(team)})


@requires("supervisor")
async def feedback_audio(request: web.Request) -> web.StreamResponse:
    """The recorded message of a feedback item (audio/wav)."""
    path = await request.app[OUTCOMES].feedback_audio(request.match_info["item"])
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


@requires("supervisor")
async def feedback_done(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    check_fields(body, ("note",))
    item = await request.app[OUTCOMES].feedback_done(request.match_info["item"], who(request),
                                                     text_field(body, "note", max_length=500))
    return web.json_response(item)


@requires("viewer")
async def report(request: web.Request) -> web.Response:
    """Reports by hour or day (``?by=hour|day&since=&until=&hours=&tz=&sl_target=&format=json|csv``)."""
    service = request.app[REPORTS]
    q = request.query
    service.check_report_query(q)
    by = q.get("by", "hour")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        return json_error(400, f"format: expected json or csv, got {fmt!r}")
    data = await service.report_for(q)
    if fmt == "csv":
        rows = data["rows"] + ([data["total"]] if data["rows"] else [])
        return web.Response(text=to_csv(rows), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="report-{by}.csv"'})
    return web.json_response(data)


@requires("viewer")
async def report_reasons(request: web.Request) -> web.Response:
    """Calls by reason with their outcomes, escalations and dispositions (``?since=&until=&hours=&tz=``)."""
    return web.json_response(await request.app[REPORTS].reasons_for(request.query))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/surveys", surveys)
    app.router.add_get("/api/v1/reports", report)
    app.router.add_get("/api/v1/reports/reasons", report_reasons)
    app.router.add_get("/api/v1/dispositions", dispositions)
    app.router.add_post("/api/v1/calls/{uid}/disposition", call_disposition)
    app.router.add_get("/api/v1/feedback", feedback_list)
    app.router.add_get("/api/v1/feedback/{item}/audio", feedback_audio)
    app.router.add_post("/api/v1/feedback/{item}/done", feedback_done)
