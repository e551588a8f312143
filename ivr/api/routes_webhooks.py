"""Webhook routes: what each webhook has delivered, is delivering, and gave up on (docs/integrations.md)."""

from __future__ import annotations

from aiohttp import web

from .http import json_error, requires
from .services import WEBHOOKS


@requires("supervisor")
async def webhook_deliveries(request: web.Request) -> web.Response:
    """Per webhook: events waiting (pending, lag), the recent tries (newest first) and the dead letters."""
    try:
        count = int(request.query.get("count", "50"))
    except ValueError:
        return json_error(400, "count: expected an integer")
    if WEBHOOKS not in request.app:
        return web.json_response({"webhooks": []})
    return web.json_response(await request.app[WEBHOOKS].deliveries(request.query.get("webhook", ""), count))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/webhooks/deliveries", webhook_deliveries)
