"""Outcomes in Redis: dispositions (stream), the last caller bridged to each agent, feedback items
(keys: ivr/store/keys.py). A disposition is written on the call record by ``Store.call_disposition``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from .errors import Translating
from .keys import Keys

DISPOSITIONS_MAXLEN = 2_000_000


class OutcomeStore(Translating):
    """Every Redis read and write of ivr/outcomes/service.py but the call record's."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def remember_connect(self, interface: str, uid: str) -> None:
        await self.redis.hset(self.keys.agents_last_call, interface, uid)

    async def last_call(self, interface: str) -> str | None:
        return await self.redis.hget(self.keys.agents_last_call, interface)

    async def new_feedback_id(self) -> str:
        return str(await self.redis.incr(self.keys.feedback_seq))

    async def add_feedback(self, item: Mapping[str, str], now: float) -> None:
        """Store an item (its ``id`` and ``team`` among the fields) and put it in its team's open list."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.feedback(item["id"]), mapping=dict(item))
            p.zadd(self.keys.feedback_team(item["team"]), {item["id"]: now})
            await p.execute()

    async def update_feedback(self, item_id: str, fields: Mapping[str, str]) -> None:
        await self.redis.hset(self.keys.feedback(item_id), mapping=dict(fields))

    async def close_feedback(self, item_id: str, team: str, fields: Mapping[str, str]) -> None:
        """Write the closing fields and take the item off its team's open list (one transaction)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.feedback(item_id), mapping=dict(fields))
            p.zrem(self.keys.feedback_team(team), item_id)
            await p.execute()

    async def feedback(self, item_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.feedback(item_id))
        return dict(raw) if raw else None

    async def feedback_items(self, team: str, count: int) -> list[dict[str, str]]:
        """The oldest ``count`` open items of a team."""
        ids = await self.redis.zrange(self.keys.feedback_team(team), 0, count - 1)
        async with self.redis.pipeline(transaction=False) as p:
            for i in ids:
                p.hgetall(self.keys.feedback(i))
            return [dict(x) for x in await p.execute() if x]

    async def feedback_counts(self, teams: Sequence[str]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as p:
            for team in teams:
                p.zcard(self.keys.feedback_team(team))
            return dict(zip(teams, await p.execute()))
