"""Refund and callback routes: look up, list and decide refund requests; record one; pending callbacks."""

from __future__ import annotations

from aiohttp import web

from .http import json_body, json_error, requires, who
from .services import CALLBACKS, REFUNDS


@requires("viewer")
async def refund_get(request: web.Request) -> web.Response:
    return web.json_response(await request.app[REFUNDS].get(request.match_info["ref"]))


@requires("viewer")
async def refund_by_booking(request: web.Request) -> web.Response:
    return web.json_response(await request.app[REFUNDS].by_booking(request.match_info["booking"]))


@requires("supervisor")
async def refund_set_status(request: web.Request) -> web.Response:
    """One decision: {"status": "approved", "note": "..."}; the customer's call is queued (``notice``)."""
    body = await json_body(request)
    return web.json_response(await request.app[REFUNDS].decide(
        request.match_info["ref"], str(body.get("status", "")), by=who(request), note=str(body.get("note") or "")))


@requires("supervisor")
async def refund_decisions(request: web.Request) -> web.Response:
    """Bulk decisions: {"decisions": [{"reference", "status", "note"}, ...]} or {"references": [...], "status",
    "note"}; each is taken on its own and reported on its own."""
    body = await json_body(request)
    if "decisions" in body:
        items = body["decisions"]
        if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
            return json_error(400, "decisions: expected a list of {reference, status, note}")
    elif isinstance(body.get("references"), list):
        items = [{"reference": r, "status": body.get("status"), "note": body.get("note")} for r in body["references"]]
    else:
        return json_error(400, "expected decisions: [...] or references: [...] with status")
    return web.json_response(await request.app[REFUNDS].decide_many(items, by=who(request)))


@requires("supervisor")
async def refund_list(request: web.Request) -> web.Response:
    """Requests in one status (default received), oldest first, with the count of every status."""
    q = request.query
    try:
        count, offset = int(q.get("count", "100")), int(q.get("offset", "0"))
    except ValueError:
        return json_error(400, "count and offset: integers")
    return web.json_response(await request.app[REFUNDS].list(q.get("status", "received"), count=count,
                                                             offset=offset, group=q.get("group", "")))


@requires("supervisor")
async def refund_create(request: web.Request) -> web.Response:
    """An agent records a request for a caller: {booking, number, lang, amount, group}; policy applies."""
    body = await json_body(request)
    rec = await request.app[REFUNDS].create(
        booking=str(body.get("booking", "")), number=str(body.get("number") or ""), lang=str(body.get("lang") or ""),
        amount=str(body.get("amount") or ""), group=str(body.get("group") or ""), by=who(request))
    return web.json_response(rec, status=201)


@requires("viewer")
async def callbacks_pending(request: web.Request) -> web.Response:
    return web.json_response({"callbacks": await request.app[CALLBACKS].pending(500)})


@requires("viewer")
async def callback_get(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CALLBACKS].get(request.match_info["cb_id"]))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/refunds/{ref}", refund_get)
    app.router.add_get("/api/v1/refunds/by-booking/{booking}", refund_by_booking)
    app.router.add_post("/api/v1/refunds/{ref}/status", refund_set_status)
    app.router.add_get("/api/v1/refunds", refund_list)
    app.router.add_post("/api/v1/refunds", refund_create)
    app.router.add_post("/api/v1/refunds/decisions", refund_decisions)
    app.router.add_get("/api/v1/callbacks", callbacks_pending)
    app.router.add_get("/api/v1/callbacks/{cb_id}", callback_get)
