"""Campaign routes: create, import contacts (CSV body), start/pause/resume/stop, progress, export.

The handlers call ``CampaignService`` (``service.py``) only, read from the app under ``CAMPAIGNS``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiohttp import web

from ..api.http import json_body, json_error, requires, who
from ..api.services import CAMPAIGNS

MAX_CSV_BYTES = 512 * 1024 * 1024


@requires("viewer")
async def list_campaigns(request: web.Request) -> web.Response:
    return web.json_response({"campaigns": await request.app[CAMPAIGNS].list()})


@requires("supervisor")
async def create_campaign(request: web.Request) -> web.Response:
    body = await json_body(request)
    campaign = await request.app[CAMPAIGNS].create(body, by=who(request))
    return web.json_response(campaign.to_dict(), status=201)


@requires("viewer")
async def get_campaign(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CAMPAIGNS].detail(request.match_info["cid"]))


@requires("supervisor")
async def import_contacts(request: web.Request) -> web.Response:
    """The request body is the CSV file; it is streamed to disk, then imported row by row."""
    service = request.app[CAMPAIGNS]
    cid = request.match_info["cid"]
    await service.get(cid)    # 404 before the upload is read
    with tempfile.TemporaryDirectory(prefix="ivr-import-") as tmp:
        path = Path(tmp) / "contacts.csv"
        size = 0
        with open(path, "wb") as fh:
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_CSV_BYTES:
                    return json_error(413, f"CSV over {MAX_CSV_BYTES // 2**20} MiB")
                fh.write(chunk)
        report = await service.import_contacts(cid, path, region=request.query.get("region", "US"),
                                               by=who(request), columns=request.query.get("columns", ""))
    return web.json_response({"rows": report.rows, "imported": report.imported, "merged": report.merged,
                              "dnc": report.dnc, "rejected": report.rejected, "columns": report.columns,
                              "errors": [{"line": line, "reason": reason} for line, reason in report.errors[:200]]})


async def _state(request: web.Request, state: str) -> web.Response:
    cid = request.match_info["cid"]
    await request.app[CAMPAIGNS].set_state(cid, state, by=who(request))
    return web.json_response({"id": cid, "state": state})


@requires("supervisor")
async def start(request: web.Request) -> web.Response:
    return await _state(request, "running")


@requires("supervisor")
async def pause(request: web.Request) -> web.Response:
    return await _state(request, "paused")


@requires("supervisor")
async def stop(request: web.Request) -> web.Response:
    return await _state(request, "stopped")


@requires("supervisor")
async def export(request: web.Request) -> web.StreamResponse:
    """Every contact (numbers, names) as CSV: personal data, so a supervisor's; cells safe from formulas."""
    service = request.app[CAMPAIGNS]
    cid = request.match_info["cid"]
    await service.get(cid)
    with tempfile.TemporaryDirectory(prefix="ivr-export-") as tmp:
        path = Path(tmp) / f"{cid}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            await service.export(cid, fh)
        return web.Response(body=path.read_bytes(), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{cid}.csv"'})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/campaigns", list_campaigns)
    app.router.add_post("/api/v1/campaigns", create_campaign)
    app.router.add_get("/api/v1/campaigns/{cid}", get_campaign)
    app.router.add_post("/api/v1/campaigns/{cid}/contacts", import_contacts)
    app.router.add_post("/api/v1/campaigns/{cid}/start", start)
    app.router.add_post("/api/v1/campaigns/{cid}/resume", start)
    app.router.add_post("/api/v1/campaigns/{cid}/pause", pause)
    app.router.add_post("/api/v1/campaigns/{cid}/stop", stop)
    app.router.add_get("/api/v1/campaigns/{cid}/export", export)
