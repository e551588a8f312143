"""The leader's lease and fenced writes (keys: ivr/store/keys.py; the election: ivr/cluster/leader.py).

The lease is one key holding ``"<token>:<node>"`` with a TTL. The token comes from a counter that grows at
each grant, so every grant is unique and later grants are larger: a *fencing token*. A write the leader makes
goes through a Lua script that first checks the lease still holds the leader's exact string; an old leader
that was paused past its lease (a long GC, a stopped VM) gets ``Fenced`` instead of overwriting the decisions
of the leader that replaced it. Redis runs a script atomically, so the check and the write are one step.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .errors import StoreError, Translating
from .keys import Keys

# KEYS[1] lease, KEYS[2] token counter; ARGV[1] node, ARGV[2] ttl ms. Grants the lease if nobody holds it;
# returns {1, holder} when granted now, {0, holder} when somebody holds it ("<token>:<node>").
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local v = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, v}
"""

# KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl ms: 1 if renewed, 0 if the lease is not (or no longer) ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The fence every leader write starts with: KEYS[1] is the lease, ARGV[1] the writer's holder string. An
# empty holder is a single node without a cluster (nobody else can lead): the write goes ahead.
FENCE = """
if ARGV[1] ~= '' then
  local lease = redis.call('GET', KEYS[1])
  if lease ~= ARGV[1] then return redis.error_reply('FENCED lease is ' .. tostring(lease)) end
end
"""

# after the fence: KEYS[2] the hash, ARGV[2..] field, value, field, value, ...
HSET_BODY = """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""


class Fenced(StoreError):
    """A leader's write was refused: the lease is no longer the writer's (another node leads)."""


def shifted(script: str) -> str:
    """``script`` with every KEYS[i] and ARGV[i] (and ``unpack(ARGV, i``) moved one place on: an existing
    script made to follow a prelude that takes KEYS[1] and ARGV[1] (the fence), unchanged otherwise."""
    script = re.sub(r"\b(KEYS|ARGV)\[(\d+)\]", lambda m: f"{m[1]}[{int(m[2]) + 1}]", script)
    return re.sub(r"\bunpack\((KEYS|ARGV), (\d+)", lambda m: f"unpack({m[1]}, {int(m[2]) + 1}", script)


def fenced(script: str) -> str:
    """``script`` with the fence in front: its KEYS[1] must be the lease and its ARGV[1] the holder."""
    return FENCE + script


async def run_fenced(client: aioredis.Redis, lease: str, script: str, holder: str, keys: Sequence[str],
                     args: Sequence[Any]) -> Any:
    """EVAL ``fenced(script)`` with ``lease`` as KEYS[1] and ``holder`` as ARGV[1], then ``keys`` and ``args``;
    ``Fenced`` when the lease is not ``holder``'s (the other store classes' fenced writes go through this)."""
    try:
        return await client.eval(fenced(script), 1 + len(keys), lease, *keys, holder, *args)
    except ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise Fenced(str(exc)) from None
        raise


def token_of(holder: str) -> int:
    """The fencing token of a holder string ("<token>:<node>"); 0 for none."""
    head = holder.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


class LeaderStore(Translating):
    """The lease's Redis commands (one round trip each) and the fenced writes."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def acquire(self, node: str, ttl_ms: int) -> tuple[bool, str]:
        """Take the lease if it is free: (granted now, the holder afterwards)."""
        granted, holder = await self.redis.eval(ACQUIRE, 2, self.keys.leader, self.keys.leader_seq, node, ttl_ms)
        return bool(granted), str(holder)

    async def renew(self, holder: str, ttl_ms: int) -> bool:
        return bool(await self.redis.eval(RENEW, 1, self.keys.leader, holder, ttl_ms))

    async def release(self, holder: str) -> bool:
        return bool(await self.redis.eval(RELEASE, 1, self.keys.leader, holder))

    async def current(self) -> str:
        """The holder of the lease now ("" when nobody leads)."""
        return str(await self.redis.get(self.keys.leader) or "")

    async def eval_fenced(self, script: str, holder: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``fenced(script)`` with the lease as KEYS[1] and ``holder`` as ARGV[1] (then ``keys``, ``args``);
        raises ``Fenced`` when the lease is not ``holder``'s."""
        return await run_fenced(self.redis, self.keys.leader, script, holder, keys, args)

    async def publish_tiers(self, holder: str, tiers_json: str, node: str) -> None:
        """The leader's overflow tiers, for the followers and the next leader (fenced by ``holder``)."""
        await self.hset_fenced(holder, self.keys.cluster_balance, {
            "tiers": tiers_json, "node": node, "token": token_of(holder), "at": f"{time.time():.3f}"})

    async def tiers(self) -> str:
        """The tiers JSON the leader published last ("" if none)."""
        return str(await self.redis.hget(self.keys.cluster_balance, "tiers") or "")

    async def hset_fenced(self, holder: str, key: str, mapping: Mapping[str, Any]) -> None:
        """HSET ``mapping`` into ``key`` if ``holder`` still leads (else ``Fenced``)."""
        await self.eval_fenced(HSET_BODY, holder, [key], [x for kv in mapping.items() for x in map(str, kv)])
