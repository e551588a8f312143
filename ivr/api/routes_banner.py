"""Banner routes: the live crisis message callers hear first, per language."""

from __future__ import annotations

from aiohttp import web

from ..banner.service import BannerError
from .http import json_body, json_error, requires, who
from .services import BANNER


@requires("viewer")
async def banner_all(request: web.Request) -> web.Response:
    return web.json_response(await request.app[BANNER].all())


@requires("supervisor")
async def banner_set(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"text"}
    if unknown:
        return json_error(400, f"unknown field {sorted(unknown)[0]!r} (expected: text)")
    text = body.get("text")
    if not isinstance(text, str):
        return json_error(400, "text: expected a string")
    try:
        data = await request.app[BANNER].set(request.match_info["lang"], text, by=who(request))
    except BannerError as exc:
        return json_error(400, str(exc))
    return web.json_response(data)


@requires("supervisor")
async def banner_clear(request: web.Request) -> web.Response:
    try:
        await request.app[BANNER].clear(request.match_info["lang"], by=who(request))
    except BannerError as exc:
        return json_error(400, str(exc))
    return web.json_response({"lang": request.match_info["lang"], "banner": None})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/banner", banner_all)
    app.router.add_put("/api/v1/banner/{lang}", banner_set)
    app.router.add_delete("/api/v1/banner/{lang}", banner_clear)
