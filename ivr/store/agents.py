"""Agents in Redis: each agent's state hash (login, PIN hash, profile override), agents added at run time,
the PIN lock counters and the run-time id sequence (keys: ivr/store/keys.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import Keys


class AgentStore(Translating):
    """Every Redis read and write of ivr/agents/roster.py."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def added(self) -> dict[str, str]:
        """Agents added at run time: id -> their stored JSON."""
        return dict(await self.redis.hgetall(self.keys.agents_added))

    async def added_one(self, agent_id: str) -> str | None:
        return await self.redis.hget(self.keys.agents_added, agent_id)

    async def add(self, agent_id: str, stored: str, fields: Mapping[str, Any]) -> bool:
        """Register a run-time agent (its JSON) unless the id is taken, then set its state fields."""
        if not await self.redis.hsetnx(self.keys.agents_added, agent_id, stored):
            return False
        await self.redis.hset(self.keys.agent(agent_id), mapping=dict(fields))
        return True

    async def replace_added(self, agent_id: str, stored: str) -> None:
        await self.redis.hset(self.keys.agents_added, agent_id, stored)

    async def remove(self, agent_id: str) -> None:
        await self.redis.hdel(self.keys.agents_added, agent_id)
        await self.redis.delete(self.keys.agent(agent_id))

    async def state(self, agent_id: str) -> dict[str, str]:
        """The agent's hash (logged_in, updated, by, pin, profile)."""
        return dict(await self.redis.hgetall(self.keys.agent(agent_id)))

    async def set_state(self, agent_id: str, fields: Mapping[str, Any]) -> None:
        await self.redis.hset(self.keys.agent(agent_id), mapping=dict(fields))

    async def pin(self, agent_id: str) -> str | None:
        return await self.redis.hget(self.keys.agent(agent_id), "pin")

    async def pin_fails(self, agent_id: str) -> int:
        return int(await self.redis.get(self.keys.agent_pin_fails(agent_id)) or 0)

    async def clear_pin_fails(self, agent_id: str) -> None:
        await self.redis.delete(self.keys.agent_pin_fails(agent_id))

    async def pin_failed(self, agent_id: str, lock_s: int) -> None:
        """Count one wrong PIN; the count lives ``lock_s`` from the last one."""
        key = self.keys.agent_pin_fails(agent_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.incr(key)
            p.expire(key, lock_s)
            await p.execute()

    async def next_seq(self) -> int:
        return int(await self.redis.incr(self.keys.agents_seq))
