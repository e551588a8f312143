"""Refund and callback routes: look up, list and decide refund requests; record one; pending callbacks."""

from __future__ import annotations

import re

from aiohttp import web

from .http import check_fields, json_body, json_error, requires, text_field, who
from .services import CALLBACKS, REFUNDS

_GROUP_RE = re.compile(r"[a-z0-9_-]{1,32}")   # a refund group (the store's rule)


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
    check_fields(body, ("status", "note"))
    return web.json_response(await request.app[REFUNDS].decide(
        request.match_info["ref"], text_field(body, "status"), by=who(request),
        note=text_field(body, "note", max_length=500)))


@requires("supervisor")
async def refund_decisions(request: web.Request) -> web.Response:
    """Bulk decisions: {"decisions": [{"reference", "status", "note"}, ...]} or {"references": [...], "status",
    "note"}; each is taken on its own and reported on its own."""
    body = await json_body(request)
    check_fields(body, ("decisions", "references", "status", "note"))
    if "decisions" in body and "references" in body:
        return json_error(400, "decisions or references, not both")
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
    group = q.get("group", "")
    if group and not _GROUP_RE.fullmatch(group):
        return json_error(400, "group: lower-case letters, digits, _ and - (at most 32)")
    return web.json_response(await request.app[REFUNDS].list(q.get("status", "received"), count=count,
                                                             offset=offset, group=group))


@requires("supervisor")
async def refund_create(request: web.Request) -> web.Response:
    """An agent records a request for a caller: {booking, number, lang, amount, group}; policy applies."""
    body = await json_body(request)
    check_fields(body, ("booking", "number", "lang", "amount", "group"))
    rec = await request.app[REFUNDS].create(
        booking=text_field(body, "booking"), number=text_field(body, "number"), lang=text_field(body, "lang"),
        amount=text_field(body, "amount"), group=text_field(body, "group"), by=who(request))
    return web.json_response(rec, status=201)


@requires("viewer")
async def callbacks_pending(request: web.Request) -> web.Response:
    return web.json_response({"callbacks": await request.app[CALLBACKS].pending(500)})


@requires("viewer")
async def callback_get(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CALLBACKS].get(request.match_info["cb_id"]))


def setup(app: web.Application) -> None:
    # {ref} is digits: /api/v1/refunds/decisions is another resource (its Allow header names POST only)
    app.router.add_get("/api/v1/refunds/{ref:[0-9]+}", refund_get)
    app.router.add_get("/api/v1/refunds/by-booking/{booking}", refund_by_booking)
    app.router.add_post("/api/v1/refunds/{ref:[0-9]+}/status", refund_set_status)
    app.router.add_get("/api/v1/refunds", refund_list)
    app.router.add_post("/api/v1/refunds", refund_create)
    app.router.add_post("/api/v1/refunds/decisions", refund_decisions)
    app.router.add_get("/api/v1/callbacks", callbacks_pending)
    app.router.add_get("/api/v1/callbacks/{cb_id}", callback_get)
