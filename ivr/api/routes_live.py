"""Live routes: the live picture (once, or as server-sent events), queues, the balancing loop, metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .http import AUTH, STREAM, requires
from .services import ACCESS, LIVE, LIVE_FEED, STOPPING


@requires("viewer")
async def live(request: web.Request) -> web.Response:
    _, text = await request.app[LIVE_FEED].snapshot()
    return web.Response(text=text, content_type="application/json")


@requires("viewer")
async def stream_ticket(request: web.Request) -> web.Response:
    """A ticket for one event stream (``GET /api/v1/stream?ticket=``), good for 30 s: EventSource cannot send
    the Authorization header, and a token in a URL would end up in proxy and browser logs."""
    access = request.app[ACCESS]
    auth = request[AUTH]
    ticket = await access.create_ticket(auth)
    return web.json_response({"ticket": ticket, "expires_in": access.ticket_ttl,
                              "stream": f"{STREAM}?ticket={ticket}"}, status=201,
                             headers={"Cache-Control": "no-store"})


@requires("viewer")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the live picture once a second (EventSource: ``?ticket=`` from
    POST /api/v1/stream/ticket; other clients can send the Authorization header)."""
    stopping = request.app[STOPPING]
    feed = request.app[LIVE_FEED]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        while not stopping.is_set():
            _, text = await feed.snapshot()
            await resp.write(f"data: {text}\n\n".encode())
            await asyncio.sleep(1.0)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


@requires("viewer")
async def queues(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].queues())


@requires("viewer")
async def balance(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].balance())


@requires("viewer")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; scrape with a viewer token (bearer_token in the scrape config)."""
    return web.Response(body=request.app[LIVE].metrics_text(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/live", live)
    app.router.add_get(STREAM, stream)
    app.router.add_post("/api/v1/stream/ticket", stream_ticket)
    app.router.add_get("/api/v1/queues", queues)
    app.router.add_get("/api/v1/balance", balance)
