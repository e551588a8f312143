"""The services the HTTP layer is built from, and the typed application keys each route module reads.

The composition root (``ivr/app/controller.py``) fills a ``Services`` and calls ``build_app(services)``; a route
module reads only the keys of the services it uses (``request.app[AGENTS]`` is an ``AgentService``). A field left
None leaves its key out: ``build_app(None)`` is the route table alone (the OpenAPI document), and unit tests
give only the services they exercise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ..agents.service import AgentService
from ..banner.service import BannerService
from ..callbacks.queries import CallbackQueries
from ..campaigns.service import CampaignService
from ..continuity.callers import CallerService
from ..outcomes.desk import OutcomesDesk
from ..refunds.desk import RefundDesk
from ..reports.reporting import ReportService
from ..webhooks.desk import WebhookDesk
from .access import AccessService
from .clientip import ClientAddress
from .live import LiveFeed, LiveView


class System(Protocol):
    """The controller node itself: its health and the menus it runs (``ivr.app.system.SystemService``)."""
    async def health(self) -> dict[str, Any]: ...

    async def reload_menus(self) -> dict[str, Any]: ...


@dataclass
class Services:
    access: AccessService | None = None
    client_address: ClientAddress = field(default_factory=ClientAddress)
    system: System | None = None
    live: LiveView | None = None
    agents: AgentService | None = None
    callers: CallerService | None = None
    outcomes: OutcomesDesk | None = None
    callbacks: CallbackQueries | None = None
    refunds: RefundDesk | None = None
    banner: BannerService | None = None
    reports: ReportService | None = None
    campaigns: CampaignService | None = None
    webhooks: WebhookDesk | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)   # set when the node shuts down
    # the configured names a request may use (lang, queue, group, team, disposition): the OpenAPI document
    # served by a running node lists them as enums; the route table alone (no config) documents patterns
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


ACCESS = web.AppKey("access", AccessService)
CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)
SYSTEM: web.AppKey[System] = web.AppKey("system")
LIVE = web.AppKey("live", LiveView)
LIVE_FEED = web.AppKey("live_feed", LiveFeed)
STOPPING = web.AppKey("stopping", asyncio.Event)
CHOICES = web.AppKey("choices", dict[str, tuple[str, ...]])
AGENTS = web.AppKey("agents", AgentService)
CALLERS = web.AppKey("callers", CallerService)
OUTCOMES = web.AppKey("outcomes", OutcomesDesk)
CALLBACKS = web.AppKey("callbacks", CallbackQueries)
REFUNDS = web.AppKey("refunds", RefundDesk)
BANNER = web.AppKey("banner", BannerService)
REPORTS = web.AppKey("reports", ReportService)
CAMPAIGNS = web.AppKey("campaigns", CampaignService)
WEBHOOKS = web.AppKey("webhooks", WebhookDesk)


def install(app: web.Application, services: Services) -> None:
    """Put each service given under its key (and the live feed built on the live view)."""
    app[CLIENT_ADDRESS] = services.client_address
    app[STOPPING] = services.stopping
    app[CHOICES] = services.choices
    if services.access is not None:
        app[ACCESS] = services.access
    if services.system is not None:
        app[SYSTEM] = services.system
    if services.live is not None:
        app[LIVE] = services.live
        app[LIVE_FEED] = LiveFeed(services.live.snapshot)
    if services.agents is not None:
        app[AGENTS] = services.agents
    if services.callers is not None:
        app[CALLERS] = services.callers
    if services.outcomes is not None:
        app[OUTCOMES] = services.outcomes
    if services.callbacks is not None:
        app[CALLBACKS] = services.callbacks
    if services.refunds is not None:
        app[REFUNDS] = services.refunds
    if services.banner is not None:
        app[BANNER] = services.banner
    if services.reports is not None:
        app[REPORTS] = services.reports
    if services.campaigns is not None:
        app[CAMPAIGNS] = services.campaigns
    if services.webhooks is not None:
        app[WEBHOOKS] = services.webhooks
