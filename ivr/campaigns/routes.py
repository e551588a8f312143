"""Campaign routes: create, import contacts (CSV body), start/pause/resume/stop, progress, export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from . import contacts
from .model import CampaignError, parse_campaign
from ..api.app import CONTROLLER, _json_body, json_error, requires

if TYPE_CHECKING:
    from ..app.controller import Controller

MAX_CSV_BYTES = 512 * 1024 * 1024


@requires("viewer")
async def list_campaigns(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    return web.json_response({"campaigns": await ctl.dialer.list()})


@requires("supervisor")
async def create_campaign(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    body = await _json_body(request)
    try:
        campaign = parse_campaign(body, queues=frozenset(ctl.cfg.queue_names()), languages=ctl.cfg.languages)
        await ctl.dialer.create(campaign, by=request["auth"].get("name", ""))
    except (CampaignError, ValueError) as exc:
        return json_error(400 if isinstance(exc, CampaignError) else 409, str(exc))
    return web.json_response(campaign.to_dict(), status=201)


@requires("viewer")
async def get_campaign(request: web.Request) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    cid = request.match_info["cid"]
    found = await ctl.dialer.get(cid)
    if found is None:
        return json_error(404, f"no campaign {cid!r}")
    counts = await contacts.counts(ctl.store.campaigns, None, cid)
    return web.json_response({**found[0].to_dict(), "state": found[1], "counts": counts, **ctl.dialer.live(cid)})


@requires("supervisor")
async def import_contacts(request: web.Request) -> web.Response:
    """The request body is the CSV file; it is streamed to disk, then imported row by row."""
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    cid = request.match_info["cid"]
    found = await ctl.dialer.get(cid)
    if found is None:
        return json_error(404, f"no campaign {cid!r}")
    with tempfile.TemporaryDirectory(prefix="ivr-import-") as tmp:
        path = Path(tmp) / "contacts.csv"
        size = 0
        with open(path, "wb") as fh:
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_CSV_BYTES:
                    return json_error(413, f"CSV over {MAX_CSV_BYTES // 2**20} MiB")
                fh.write(chunk)
        try:
            report = await contacts.import_csv(ctl.store.campaigns, None, cid, path,
                                               default_region=request.query.get("region", "US"),
                                               default_lang=found[0].default_lang,
                                               allowed_prefixes=found[0].allowed_prefixes, batch=250)
        except contacts.ContactsError as exc:
            return json_error(400, str(exc))
    await ctl.store.audit(request["auth"].get("name", ""), "campaign.import", cid, None,
                          {"imported": report.imported, "rejected": report.rejected})
    return web.json_response({"rows": report.rows, "imported": report.imported, "merged": report.merged,
                              "dnc": report.dnc, "rejected": report.rejected,
                              "errors": [{"line": line, "reason": reason} for line, reason in report.errors[:200]]})


async def _state(request: web.Request, state: str) -> web.Response:
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    cid = request.match_info["cid"]
    try:
        await ctl.dialer.set_state(cid, state, by=request["auth"].get("name", ""))
    except KeyError:
        return json_error(404, f"no campaign {cid!r}")
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
    ctl: Controller = request.app[CONTROLLER]  # type: ignore[assignment]
    cid = request.match_info["cid"]
    if await ctl.dialer.get(cid) is None:
        return json_error(404, f"no campaign {cid!r}")
    with tempfile.TemporaryDirectory(prefix="ivr-export-") as tmp:
        path = Path(tmp) / f"{cid}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            await contacts.export_csv(ctl.store.campaigns, None, cid, fh)
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
