"""The services the command line uses without a running controller: the banner, API tokens, reports and
campaigns, on a store of their own.

``ivr banner|token|report|campaign`` open them with ``async with offline_services(cfg) as services:``; the
store (the Redis connection) is opened and closed here, never by the commands themselves.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from ..api.access import TokenAdmin
from ..banner.service import BannerService, live_prompts_dir
from ..campaigns.dialer import Dialer
from ..campaigns.service import CampaignService
from ..reports.reporting import ReportService
from ..store.redis_store import Store
from .config import Config


@dataclass(frozen=True)
class OfflineServices:
    banner: BannerService
    tokens: TokenAdmin
    reports: ReportService
    campaigns: CampaignService


@asynccontextmanager
async def offline_services(cfg: Config) -> AsyncIterator[OfflineServices]:
    """The command line's services on a store of their own, closed on the way out."""
    store = Store.from_config(cfg.redis)
    try:
        # managing campaigns (create, import, state, export) needs no AMI: only a running controller dials
        dialer = Dialer(cfg, store, None)  # type: ignore[arg-type]  # managing campaigns sends no AMI action
        yield OfflineServices(
            banner=BannerService(store, live_prompts_dir(cfg), cfg.languages),
            tokens=TokenAdmin(store),
            reports=ReportService(store, cfg.dispositions),
            campaigns=CampaignService(dialer, store, cfg.queue_names(), cfg.languages),
        )
    finally:
        await store.close()
