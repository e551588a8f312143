"""Caller continuity in Redis: each caller's hash, history list and live-call set, and the places kept
for callers who dropped out of a queue (keys: ivr/store/keys.py; the logic: ivr/continuity/service.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import Keys
from .leader import run_fenced
from .scripting import script_sha, scripted_pipeline

# after the fence (KEYS[1] lease, ARGV[1] holder): KEYS[2] dropped due, KEYS[3] dropped; ARGV[2] the number.
# claim_place's transaction as one script: {taken, the place's JSON or nil}
CLAIM_PLACE_BODY = """
local taken = redis.call('ZREM', KEYS[2], ARGV[2])
local raw = redis.call('HGET', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return {taken, raw}
"""

# KEYS: the caller's live set, their calls list, their hash. ARGV: the call's uid, its summary (JSON), the
# history's last index, the TTL, when it was answered ("" if it was not).
REMEMBER_LUA = """
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], 'last_answered', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return 0
"""
REMEMBER_SHA = script_sha(REMEMBER_LUA)


class ContinuityStore(Translating):
    """Every Redis read and write of ivr/continuity/service.py."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def recognise(self, number: str, uid: str, now: float, *, live_ttl: int, history: int,
                        history_ttl: int) -> tuple[str | None, Any, str | None, list[str], str | None]:
        """At the start of a call, one round trip: mark ``uid`` live, read (dropped place JSON, its deadline,
        notice JSON, the last ``history`` calls' JSON, flag JSON), note last_in/last_uid."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as p:
            p.sadd(k.caller_live(number), uid)
            p.expire(k.caller_live(number), live_ttl)
            p.hget(k.dropped, number)
            p.zscore(k.dropped_due, number)
            p.hget(k.caller(number), "notice")
            p.lrange(k.caller_calls(number), 0, max(0, history - 1))
            p.hget(k.caller(number), "flag")
            p.hset(k.caller(number), mapping={"last_in": str(now), "last_uid": uid})
            p.expire(k.caller(number), history_ttl)
            _, _, raw_drop, deadline, raw_notice, raw_calls, raw_flag, _, _ = await p.execute()
        return raw_drop, deadline, raw_notice, list(raw_calls), raw_flag

    async def take_place(self, number: str) -> bool:
        """Take a kept place (once: True only for the one that took it)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self.keys.dropped_due, number)
            p.hdel(self.keys.dropped, number)
            taken, _ = await p.execute()
        return bool(taken)

    async def keep_place(self, number: str, drop: Mapping[str, Any], until: float) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.dropped, number, json.dumps(drop))
            p.zadd(self.keys.dropped_due, {number: until})
            await p.execute()

    async def places_due(self, now: float, count: int = 200) -> list[str]:
        return list(await self.redis.zrangebyscore(self.keys.dropped_due, "-inf", now, start=0, num=count))

    async def claim_place(self, number: str, fence: str | None = None) -> tuple[bool, str | None]:
        """Take a place whose window passed (once, even with several nodes): (taken, its JSON). With ``fence``
        (the balancing leader's holder string) only while that lease holds (else ``Fenced``)."""
        if fence is not None:
            taken, raw = await run_fenced(self.redis, self.keys.leader, CLAIM_PLACE_BODY, fence,
                                          [self.keys.dropped_due, self.keys.dropped], [number])
            return bool(taken), raw or None
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self.keys.dropped_due, number)
            p.hget(self.keys.dropped, number)
            p.hdel(self.keys.dropped, number)
            taken, raw, _ = await p.execute()
        return bool(taken), raw

    async def swap_flag(self, number: str, flag: str | None, ttl: int = 0) -> str | None:
        """Set (``flag`` JSON, renewing the hash's TTL) or clear (None) a caller's flag; the old one's JSON."""
        key = self.keys.caller(number)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(key, "flag")
            if flag is None:
                p.hdel(key, "flag")
                old, _ = await p.execute()
            else:
                p.hset(key, "flag", flag)
                p.expire(key, ttl)
                old, _, _ = await p.execute()
        return old

    async def set_notice(self, number: str, notice: str, ttl: int) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(self.keys.caller(number), "notice", notice)
            p.expire(self.keys.caller(number), ttl)
            await p.execute()

    async def mark_live(self, number: str, uid: str, ttl: int) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            p.sadd(self.keys.caller_live(number), uid)
            p.expire(self.keys.caller_live(number), ttl)
            await p.execute()

    async def live(self, number: str) -> set[str]:
        return set(await self.redis.smembers(self.keys.caller_live(number)))

    async def forget_live(self, number: str, uids: Iterable[str]) -> None:
        uids = list(uids)
        if uids:
            await self.redis.srem(self.keys.caller_live(number), *uids)

    async def last_answered(self, number: str) -> str | None:
        return await self.redis.hget(self.keys.caller(number), "last_answered")

    async def remember(self, entries: Sequence[tuple[str, str, str, str]], *, last_index: int, ttl: int,
                       with_campaigns: bool) -> tuple[set[str], list[Any]]:
        """Callers' histories after their calls, one round trip: per (number, uid, summary JSON, answered at
        or ""), the uid leaves the live set and the summary goes on the capped list (REMEMBER_LUA).
        ``with_campaigns`` also reads the campaign ids. Returns (campaign ids, every reply, the campaign
        read's first: an error in place of a refused command)."""
        k = self.keys

        def stage(p: Any) -> None:
            if with_campaigns:   # read in the same round trip: most calls end with no campaign running
                p.smembers(k.campaigns)
            for number, uid, summary, answered in entries:
                p.evalsha(REMEMBER_SHA, 3, k.caller_live(number), k.caller_calls(number), k.caller(number),
                          uid, summary, last_index, ttl, answered)

        replies = await scripted_pipeline(self.redis, stage, [REMEMBER_LUA])
        campaigns: set[str] = set()
        if with_campaigns and not isinstance(replies[0], Exception):
            campaigns = set(replies[0])
        return campaigns, replies

    async def numbers_in_campaigns(self, cids: Sequence[str], number: str) -> list[str | None]:
        """The contact n of ``number`` in each campaign (None where it is not one), one round trip."""
        async with self.redis.pipeline(transaction=False) as p:
            for cid in cids:
                p.hget(self.keys.campaign_numbers(cid), number)
            return list(await p.execute())

    async def describe(self, number: str) -> tuple[dict[str, str], set[str], list[str], str | None, Any]:
        """(caller hash, live uids, all history JSON, kept place JSON, its deadline), one round trip."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(k.caller(number))
            p.smembers(k.caller_live(number))
            p.lrange(k.caller_calls(number), 0, -1)
            p.hget(k.dropped, number)
            p.zscore(k.dropped_due, number)
            info, live, raw_calls, raw_drop, deadline = await p.execute()
        return dict(info), set(live), list(raw_calls), raw_drop, deadline
