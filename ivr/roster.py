"""The agent roster: who may serve which queue, with skill, team and tier, and who is logged in.

Agents and their SIP endpoints come from the config; whether each one is
logged in lives in Redis (``{p}:agent:{id}``), so it survives a controller
restart and is shared by every controller node. The balancing loop reads the
roster every tick; nothing here talks to Asterisk.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .config import AgentConfig, Config
from .store.redis_store import Store

log = logging.getLogger(__name__)


class Roster:
    """Agents from the config, login state from Redis (cached; written through)."""

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.agents: dict[str, AgentConfig] = {a.id: a for a in cfg.agents}
        self.logged_in: dict[str, bool] = {a.id: a.logged_in for a in cfg.agents}
        self.changed_at = 0.0

    def _key(self, agent_id: str) -> str:
        return f"{self.store.keys.prefix}:agent:{agent_id}"

    async def load(self) -> None:
        """Read the login state from Redis; agents not there yet are seeded from the config."""
        for agent_id, agent in self.agents.items():
            raw = await self.store.redis.hget(self._key(agent_id), "logged_in")
            if raw is None:
                await self.store.redis.hset(self._key(agent_id), mapping={
                    "logged_in": "1" if agent.logged_in else "0", "updated": str(time.time()), "by": "config"})
            else:
                self.logged_in[agent_id] = raw == "1"
        self.changed_at = time.time()

    async def set_logged_in(self, agent_id: str, logged_in: bool, by: str = "") -> None:
        """Log an agent in or out (API, phone feature code); the next balancing tick applies it."""
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        old = self.logged_in.get(agent_id, False)
        await self.store.redis.hset(self._key(agent_id), mapping={
            "logged_in": "1" if logged_in else "0", "updated": str(time.time()), "by": by or "api"})
        self.logged_in[agent_id] = logged_in
        self.changed_at = time.time()
        if old != logged_in:
            await self.store.audit(by or "api", "agent.login" if logged_in else "agent.logout", agent_id, old, logged_in)

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": a.id, "name": a.name, "skill": a.skill, "team": a.team, "tier": a.tier,
                 "queues": list(a.queues), "languages": list(a.languages),
                 "logged_in": self.logged_in.get(a.id, False)} for a in self.agents.values()]
