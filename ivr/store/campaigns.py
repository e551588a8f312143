"""Campaigns in Redis: definitions, contacts, the dialler's due and lease lines, attempts, the do-not-call list.

The layout is in ivr/store/keys.py (``{p}:campaign:{cid}...``, ``{p}:campaigns``, ``{p}:dnc``). Why an
import is one Lua call per batch, and how a claim moves contacts from ``due`` to ``leases``: see
ivr/campaigns/contacts.py and ivr/campaigns/dialer.py, which hold the logic and call this store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import CampaignKeys, Keys

ATTEMPTS_MAXLEN = 2_000_000
HOUR_TTL_S = 7200

IMPORT_LUA = """
local base, f = ARGV[1], tonumber(ARGV[2])
local names, nums = {unpack(ARGV, 3, 2 + f)}, {}
for i = 3 + f, #ARGV, f do nums[#nums + 1] = ARGV[i] end
local function each(cmd, key, list, out)   -- one command per 4000 arguments (unpack's limit is 8000)
  for s = 1, #list, 4000 do
    local r = redis.call(cmd, key, unpack(list, s, math.min(s + 3999, #list)))
    if out then for _, v in ipairs(r) do out[#out + 1] = v end end
  end
  return out
end
local known, banned = each('HMGET', KEYS[1], nums, {}), each('SMISMEMBER', KEYS[4], nums, {})
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local here, index, due, new, dnc, merged = {}, {}, {}, 0, 0, 0
for r, number in ipairs(nums) do
  local i, n = 3 + f + (r - 1) * f, here[number] or known[r]
  local key = n and (base .. ':contact:' .. n)
  if n and redis.call('EXISTS', key) == 1 then     -- a repeat: fill the first contact's empty fields
    local cur, fill = redis.call('HMGET', key, unpack(names)), {}
    for j = 2, f do
      local v = ARGV[i + j - 1]
      if v ~= '' and (not cur[j] or cur[j] == '') then fill[#fill + 1] = names[j]; fill[#fill + 1] = v end
    end
    if #fill > 0 then redis.call('HSET', key, unpack(fill)) end
    merged = merged + 1
  else
    seq = seq + 1
    n, here[number] = seq, seq
    local status = banned[r] == 1 and 'dnc' or 'pending'
    local args = {'status', status, 'attempts', '0'}
    for j = 1, f do
      local v = ARGV[i + j - 1]
      if v ~= '' then args[#args + 1] = names[j]; args[#args + 1] = v end
    end
    redis.call('HSET', base .. ':contact:' .. n, unpack(args))
    index[#index + 1] = number; index[#index + 1] = n
    if status == 'dnc' then dnc = dnc + 1 else new = new + 1; due[#due + 1] = 0; due[#due + 1] = n end
  end
end
if #index > 0 then redis.call('SET', KEYS[2], seq); each('HSET', KEYS[1], index) end
if #due > 0 then each('ZADD', KEYS[3], due) end
if new > 0 then redis.call('INCRBY', base .. ':count:pending', new) end
if dnc > 0 then redis.call('INCRBY', base .. ':count:dnc', dnc) end
return {new, dnc, merged}
"""
CLAIM_LUA = """
local ns = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, n in ipairs(ns) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('ZADD', KEYS[2], ARGV[3], n)
end
return ns
"""
SET_STATUS_LUA = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 3))
if old ~= ARGV[2] then
  redis.call('DECR', ARGV[1] .. ':count:' .. old)
  redis.call('INCR', ARGV[1] .. ':count:' .. ARGV[2])
end
return old
"""
ADD_LUA = """
local n = redis.call('INCR', KEYS[2])
local status = redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 and 'dnc' or 'pending'
redis.call('HSET', ARGV[1] .. ':contact:' .. n, 'status', status, 'attempts', '0', 'line', '0', unpack(ARGV, 3))
redis.call('HSET', KEYS[1], ARGV[2], n)
redis.call('INCR', ARGV[1] .. ':count:' .. status)
if status == 'pending' then redis.call('ZADD', ARGV[1] .. ':due', 0, n) end
return {n, status}
"""


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))


class CampaignStore(Translating):
    """Every Redis read and write of the campaigns and their contacts."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self._scripts: dict[str, Any] = {}

    @classmethod
    def wrap(cls, db: Any, prefix: str | None = None) -> CampaignStore:
        """The campaign store for ``db``: a CampaignStore, a ``Store`` (its ``campaigns``), or (as the
        functions of ivr.campaigns.contacts were once called) a Redis client and a key prefix."""
        if isinstance(db, CampaignStore):
            return db
        sub = getattr(db, "campaigns", None)
        if isinstance(sub, CampaignStore):
            return sub
        return cls(db, Keys(prefix or "ivr"))

    def _script(self, lua: str) -> Any:
        if lua not in self._scripts:
            self._scripts[lua] = self.redis.register_script(lua)
        return self._scripts[lua]

    def contact_keys(self, cid: str) -> CampaignKeys:
        return self.keys.campaign_keys(cid)

    # ---------------------------------------------------------- definitions
    async def create(self, cid: str, definition: Mapping[str, Any]) -> bool:
        """Store a new campaign (state draft); False if one with that id exists already."""
        if await self.redis.exists(self.keys.campaign(cid)):
            return False
        await self.redis.hset(self.keys.campaign(cid), mapping={
            "def": json.dumps(definition), "state": "draft", "created": str(time.time())})
        await self.redis.sadd(self.keys.campaigns, cid)
        return True

    async def get(self, cid: str) -> tuple[dict[str, Any], str] | None:
        """(definition, state) of a campaign, or None."""
        raw = await self.redis.hgetall(self.keys.campaign(cid))
        if not raw:
            return None
        return json.loads(raw["def"]), raw.get("state", "draft")

    async def set_state(self, cid: str, state: str) -> None:
        await self.redis.hset(self.keys.campaign(cid), mapping={"state": state, "updated": str(time.time())})

    async def state(self, cid: str) -> str | None:
        return await self.redis.hget(self.keys.campaign(cid), "state")

    async def ids(self) -> set[str]:
        """Every campaign id."""
        return set(await self.redis.smembers(self.keys.campaigns))

    # -------------------------------------------------------------- dialling
    async def dials_this_hour(self, cid: str, hour: str) -> int:
        return int(await self.redis.get(self.keys.campaign_hour(cid, hour)) or 0)

    async def count_dial(self, cid: str, hour: str) -> None:
        key = self.keys.campaign_hour(cid, hour)
        await self.redis.incr(key)
        await self.redis.expire(key, HOUR_TTL_S)

    async def claim(self, cid: str, now: float, count: int, lease_until: float) -> list[str]:
        """Move up to ``count`` contacts due by ``now`` to the leases (atomic); their numbers n."""
        ns = await self._script(CLAIM_LUA)(keys=[self.keys.campaign_due(cid), self.keys.campaign_leases(cid)],
                                           args=[now, count, lease_until])
        return [_s(n) for n in ns or []]

    async def leased_count(self, cid: str) -> int:
        return int(await self.redis.zcard(self.keys.campaign_leases(cid)))

    async def due_count(self, cid: str) -> int:
        return int(await self.redis.zcard(self.keys.campaign_due(cid)))

    async def leased(self, cid: str) -> list[str]:
        return list(await self.redis.zrange(self.keys.campaign_leases(cid), 0, -1))

    async def release(self, cid: str, n: str) -> None:
        """Take a contact off the leases (no new due time)."""
        await self.redis.zrem(self.keys.campaign_leases(cid), n)

    async def requeue(self, cid: str, n: str, when: float) -> None:
        """Lease off, due again at ``when`` (one transaction)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self.keys.campaign_leases(cid), n)
            p.zadd(self.keys.campaign_due(cid), {n: when})
            await p.execute()

    async def unschedule(self, cid: str, n: str) -> None:
        """Off the leases and off the due line (a closed contact)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self.keys.campaign_leases(cid), n)
            p.zrem(self.keys.campaign_due(cid), n)
            await p.execute()

    async def unschedule_due(self, cid: str, n: str) -> None:
        """Off the due line only."""
        await self.redis.zrem(self.keys.campaign_due(cid), n)

    async def add_attempt(self, cid: str, fields: Mapping[str, str]) -> None:
        await self.redis.xadd(self.keys.campaign_attempts(cid), dict(fields), maxlen=ATTEMPTS_MAXLEN,
                              approximate=True)

    async def import_started(self, cid: str) -> None:
        k = self.contact_keys(cid)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(k.summary)
            p.hset(k.summary, mapping={"state": "running", "started": str(time.time())})
            await p.execute()

    async def import_batch(self, cid: str, names: Sequence[str], rows: Iterable[Sequence[str]]) -> tuple[int, int, int]:
        """Import one batch (one Lua call): rows of values in the order of ``names`` (number first).
        Returns (new, dnc, merged)."""
        k = self.contact_keys(cid)
        args = [k.base, str(len(names)), *names]
        for row in rows:
            args += list(row)
        new, dnc, merged = await self._script(IMPORT_LUA)(keys=[k.numbers, k.seq, k.due, k.dnc], args=args)
        return int(new), int(dnc), int(merged)

    async def import_summary(self, cid: str, fields: Mapping[str, Any]) -> None:
        """Write fields of the last import's summary (state, counts, error, ...)."""
        await self.redis.hset(self.contact_keys(cid).summary, mapping={k: str(v) for k, v in fields.items()})

    async def last_n(self, cid: str) -> int:
        """The last contact number given out in the campaign."""
        return int(_s(await self.redis.get(self.contact_keys(cid).seq)) or 0)

    async def contacts(self, cid: str, ns: Sequence[int]) -> list[dict[str, str]]:
        """The fields of contacts ``ns`` (one round trip; {} for one that is missing)."""
        k = self.contact_keys(cid)
        async with self.redis.pipeline(transaction=False) as p:
            for n in ns:
                p.hgetall(k.contact(n))
            hashes = await p.execute()
        return [{_s(a): _s(b) for a, b in (raw or {}).items()} for raw in hashes]

    async def contact(self, cid: str, n: int) -> dict[str, str] | None:
        """One contact's fields (plus ``n``), or None."""
        raw = await self.redis.hgetall(self.contact_keys(cid).contact(n))
        return {**{_s(a): _s(b) for a, b in raw.items()}, "n": str(n)} if raw else None

    async def set_contact_fields(self, cid: str, n: int | str, fields: Mapping[str, str]) -> None:
        """Set fields of a contact other than its status (the counters follow ``set_status``)."""
        await self.redis.hset(self.contact_keys(cid).contact(n), mapping=dict(fields))

    async def counts(self, cid: str, statuses: Sequence[str]) -> dict[str, int]:
        """Contacts by status: one MGET of the counters."""
        k = self.contact_keys(cid)
        values = await self.redis.mget([k.count(s) for s in statuses])
        return {s: int(_s(v) or 0) for s, v in zip(statuses, values)}

    async def set_status(self, cid: str, n: int, new_status: str, fields: Mapping[str, str]) -> str | None:
        """Set a contact's status and fields and move the counters (Lua); the old status, or None."""
        k = self.contact_keys(cid)
        flat = [x for kv in fields.items() for x in (kv[0], str(kv[1]))]
        old = await self._script(SET_STATUS_LUA)(keys=[k.contact(n)], args=[k.base, new_status, *flat])
        return _s(old) if old else None

    async def add_contact(self, cid: str, number: str, fields: Mapping[str, str]) -> tuple[int, str]:
        """Append one contact (one Lua call); (n, status)."""
        k = self.contact_keys(cid)
        flat = [x for kv in fields.items() if kv[1] for x in kv]
        n, status = await self._script(ADD_LUA)(keys=[k.numbers, k.seq, k.dnc], args=[k.base, number, *flat])
        return int(n), _s(status)

    # --------------------------------------------------------- do-not-call
    async def dnc_add(self, numbers: Sequence[str]) -> int:
        return int(await self.redis.sadd(self.keys.dnc, *numbers)) if numbers else 0

    async def dnc_remove(self, numbers: Sequence[str]) -> int:
        return int(await self.redis.srem(self.keys.dnc, *numbers)) if numbers else 0

    async def dnc_has(self, number: str) -> bool:
        return bool(await self.redis.sismember(self.keys.dnc, number))
