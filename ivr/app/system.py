"""The controller node as the API sees it: its health (every part's counters) and a menu reload.

``SystemService`` is given the node's parts by the composition root (``controller.py``) and only reads them;
the HTTP layer types it as ``ivr.api.services.System``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..asterisk.agi_server import AgiServer
from ..asterisk.ami_client import AmiClient
from ..balance.loop import BalanceLoop
from ..callbacks.service import CallbackDispatcher
from ..campaigns.dialer import Dialer
from ..campaigns.work import CampaignWork
from ..cluster.leader import Leadership
from ..menu.schema import MenuSet
from ..outcomes.records import CallRecorder
from ..prompts.library import PromptLibrary
from ..store.redis_store import Store


class SystemService:
    """Health detail and menu reloads of one controller node."""

    def __init__(self, *, node: str, store: Store, ami: AmiClient, agi: AgiServer, menus: MenuSet,
                 prompts: PromptLibrary, recorder: CallRecorder, balance: BalanceLoop, dialer: Dialer,
                 dispatcher: CallbackDispatcher, started_at: float | None = None,
                 leadership: Leadership | None = None, campaign_work: CampaignWork | None = None,
                 cluster: Callable[[], dict[str, Any]] | None = None) -> None:
        self.node = node
        self._leadership = leadership or Leadership.solo(node)
        self._work = campaign_work
        self._store = store
        self._ami = ami
        self._agi = agi
        self._menus = menus
        self._prompts = prompts
        self._recorder = recorder
        self._balance = balance
        self._dialer = dialer
        self._dispatcher = dispatcher
        self.started_at = time.time() if started_at is None else started_at
        self._cluster = cluster   # with a cluster: the nodes seen, the leader, the waiting register, the sweep

    def reload(self) -> list[str]:
        """Reload menus and prompts; returns the errors (the valid menus are live either way)."""
        self._prompts.scan()
        return self._menus.load()

    async def reload_menus(self) -> dict[str, Any]:
        errors = self.reload()
        return {"loaded": sorted(self._menus.menus), "errors": errors, "version": self._menus.version}

    async def health(self) -> dict[str, Any]:
        try:
            redis_ok = await asyncio.wait_for(self._store.ping(), 1.0)
        except Exception:
            redis_ok = False
        ami, agi, rec, bal, cbs = self._ami, self._agi, self._recorder, self._balance, self._dispatcher
        ok = redis_ok and ami.connected
        detail: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "node": self.node,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 1),
            "redis": redis_ok,
            "ami": {"connected": ami.connected, "reconnects": ami.reconnects, "flaps": ami.flaps,
                    "last_error": ami.last_error},
            "agi": {"port": agi.port, "active_calls": agi.active_calls,
                    "calls": agi.calls_total, "failed": agi.calls_failed,
                    "commands": agi.commands_total},
            "menus": {"loaded": sorted(self._menus.menus), "errors": self._menus.errors},
            "tasks": len(asyncio.all_tasks()),
            "records": {"written": rec.records_written, "active": rec.active,
                        "pending": rec.pending, "retries": rec.retries,
                        "write_errors": rec.write_errors},
            "balance": {"ticks": bal.ticks, "follower_ticks": bal.follower_ticks, "errors": bal.errors,
                        "last_tick_ms": round(bal.last_tick_ms, 2),
                        "actions": bal.actions_by_kind,
                        "tiers_open": sorted(q for q, t in bal.tiers.items() if t.open)},
            "dialer": {**self._dialer.health(), "fenced": self._dialer.fenced,
                       **({"work": self._work.health()} if self._work is not None else {})},
            "callbacks": {"recovered": cbs.recovered, "recover_errors": cbs.recover_errors,
                          "last_recover_error": cbs.last_recover_error, "fenced": cbs.fenced},
        }
        if self._leadership.clustered or self._cluster is not None:   # a single node has no cluster section
            detail["cluster"] = {**cluster_view(self._leadership), **(self._cluster() if self._cluster else {})}
        return detail


def cluster_view(leadership: Leadership) -> dict[str, Any]:
    """This node and the balancing leader as /health and the live view show them."""
    return {"node": leadership.node, "leader": leadership.leader, "leading": leadership.is_leader,
            "token": leadership.token}
