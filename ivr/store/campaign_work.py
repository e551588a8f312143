"""Campaign work across nodes: the leader's claims go into a Redis Stream, every node dials from it.

The leader's pacer claims due contacts and appends one entry per claim to ``{p}:campaign:{cid}:work`` in one
fenced Lua script (``enqueue``): the contact moves from ``due`` to ``leases``, its ``claims`` counter grows by
one (the claim's *attempt* number, unique per contact), and the entry carries ``n`` and that attempt. Claim and
entry are one atomic step, so a claim never exists without its entry, and a leader that lost its lease gets
``Fenced`` and claims nothing.

Every node reads the stream in the consumer group ``dialers`` (consumer = its node name) and, before it does
anything with an entry, takes ``{p}:campaign:{cid}:attempt:{n}:{attempt}`` with SET NX (``take``, a Lua script
that also checks the entry is still the contact's current claim). Only the node that took it dials; any other
node that ever sees the same entry (re-delivered after XAUTOCLAIM) acknowledges and skips it. Entries a node
read but never acknowledged (it died) are taken over by any node with XAUTOCLAIM once idle long enough.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .campaigns import SET_STATUS_LUA
from .errors import StoreError, Translating
from .keys import Keys
from .leader import run_fenced, shifted

GROUP = "dialers"
ATTEMPT_TTL_S = 7 * 86400   # a claim's SET NX key outlives any campaign attempt by far

# after the fence (KEYS[1] lease, ARGV[1] holder): KEYS[2] due, KEYS[3] leases, KEYS[4] the work stream;
# ARGV[2] now, ARGV[3] count, ARGV[4] lease until, ARGV[5] the campaign's key base ("{p}:campaign:{cid}").
# Returns n, attempt, n, attempt, ... of the claims made.
ENQUEUE_BODY = """
local ns = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, n in ipairs(ns) do
  redis.call('ZREM', KEYS[2], n)
  redis.call('ZADD', KEYS[3], ARGV[4], n)
  local contact = ARGV[5] .. ':contact:' .. n
  local attempt = 0
  if redis.call('EXISTS', contact) == 1 then attempt = redis.call('HINCRBY', contact, 'claims', 1) end
  redis.call('XADD', KEYS[4], '*', 'n', n, 'attempt', attempt)
  out[#out + 1] = n; out[#out + 1] = tostring(attempt)
end
return out
"""

# KEYS[1] the claim's attempt key, KEYS[2] leases, KEYS[3] the contact; ARGV[1] n, ARGV[2] attempt,
# ARGV[3] node, ARGV[4] ttl s, ARGV[5] '1' to take over a claim another node took and never dialled (an entry
# reclaimed after it sat idle: that node died half-way). {'taken', node}: this node dials it (taken now, taken
# over, or taken earlier by this same node, which has not dialled it yet: it failed half-way or restarted);
# {'done', holder}: another node took it, or this node dialled it already; {'stale', ''}: no longer the
# contact's current claim (settled meanwhile).
TAKE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local open = redis.call('HGET', KEYS[3], 'status') ~= 'in_progress' and redis.call('ZSCORE', KEYS[2], ARGV[1])
  if open and holder == ARGV[3] then return {'taken', holder} end
  if open and ARGV[5] == '1' then
    redis.call('SET', KEYS[1], ARGV[3], 'XX', 'EX', ARGV[4])
    return {'taken', ARGV[3]}
  end
  return {'done', holder}
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'stale', ''} end
local current = redis.call('HGET', KEYS[3], 'claims')
if ARGV[2] ~= '0' and current ~= ARGV[2] then return {'stale', ''} end
redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[4])
return {'taken', ARGV[3]}
"""


# The dial's own guard: KEYS[1] the claim's attempt key, ARGV[1] the node; then SET_STATUS_LUA (shifted). The
# contact becomes in_progress only while the claim is still this node's: a node that was paused while another
# took its claim over cannot dial it too.
STILL_MINE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTMINE claim taken over') end
"""
MARK_LUA = STILL_MINE + shifted(SET_STATUS_LUA)

# The leader's settling of an attempt a lost node left in_progress (after the fence: KEYS[1] lease, ARGV[1]
# holder): KEYS[2] the contact, KEYS[3] leases, KEYS[4] due; ARGV[2] n, ARGV[3] the lost node, ARGV[4] the
# attempt's account code, ARGV[5] the campaign's key base, ARGV[6] the new status, ARGV[7..] field, value, ...
# Only while the contact is still in_progress on that node with that very attempt (its own outcome, or an
# earlier settling, did not come first): the status and its counters, off the leases and the due line. 1 if
# settled now, 0 if not.
SETTLE_LOST_BODY = """
if redis.call('HGET', KEYS[2], 'status') ~= 'in_progress' then return 0 end
if redis.call('HGET', KEYS[2], 'node') ~= ARGV[3] then return 0 end
if (redis.call('HGET', KEYS[2], 'attempt_id') or '') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[6], unpack(ARGV, 7))
if ARGV[6] ~= 'in_progress' then
  redis.call('DECR', ARGV[5] .. ':count:in_progress')
  redis.call('INCR', ARGV[5] .. ':count:' .. ARGV[6])
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""


class TakenOver(StoreError):
    """The claim was taken over by another node (this one sat on it too long): do not dial it."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One stream entry: claim ``attempt`` of contact ``n`` of campaign ``cid``."""

    cid: str
    entry: str
    n: str
    attempt: int


def _items(cid: str, entries: Iterable[Any]) -> list[WorkItem]:
    out = []
    for entry in entries or ():
        if not entry or entry[1] is None:   # an entry deleted while pending (XAUTOCLAIM reports it apart)
            continue
        entry_id, fields = entry
        out.append(WorkItem(cid, str(entry_id), str(fields.get("n", "")), int(fields.get("attempt") or 0)))
    return out


class CampaignWorkStore(Translating):
    """The campaign work stream, its consumer group and the per-claim SET NX keys."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def enqueue(self, cid: str, holder: str, now: float, count: int, lease_until: float) -> list[tuple[str, int]]:
        """The leader's claim: up to ``count`` contacts due by ``now`` leased and appended to the work stream,
        atomically and fenced by ``holder`` (``Fenced`` if another node leads). Returns (n, attempt) of each."""
        k = self.keys
        flat = await run_fenced(self.redis, k.leader, ENQUEUE_BODY, holder,
                                [k.campaign_due(cid), k.campaign_leases(cid), k.campaign_work(cid)],
                                [now, count, lease_until, k.campaign(cid)])
        return [(str(flat[i]), int(flat[i + 1])) for i in range(0, len(flat or []), 2)]

    async def ensure_group(self, cid: str) -> None:
        """Create the consumer group (and the stream) if missing, from the stream's start: no entry missed."""
        try:
            await self.redis.xgroup_create(self.keys.campaign_work(cid), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, cids: Sequence[str], consumer: str, count: int = 50, block_ms: int = 500,
                   own_pending: bool = False) -> list[WorkItem]:
        """New entries for ``consumer`` (XREADGROUP ``>``), or with ``own_pending`` the ones delivered to it
        before and not acknowledged (``0``: after a restart or a failure half-way)."""
        if not cids:
            return []
        streams = {self.keys.campaign_work(c): ("0" if own_pending else ">") for c in cids}
        by_key = {self.keys.campaign_work(c): c for c in cids}
        reply = await self.redis.xreadgroup(GROUP, consumer, streams, count=count,
                                            block=None if own_pending else block_ms)
        out: list[WorkItem] = []
        for key, entries in reply or []:
            out += _items(by_key[str(key)], entries)
        return out

    async def autoclaim(self, cid: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[WorkItem]:
        """Entries idle (read, never acknowledged) for ``min_idle_ms`` or more, now ``consumer``'s (XAUTOCLAIM,
        following its cursor through the whole pending list)."""
        out: list[WorkItem] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(self.keys.campaign_work(cid), GROUP, consumer, min_idle_ms,
                                                start_id=cursor, count=count)
            cursor, entries = str(reply[0]), reply[1]
            out += _items(cid, entries)
            if cursor == "0-0" or len(out) >= count:
                return out

    async def take(self, item: WorkItem, node: str, takeover: bool = False,
                   ttl_s: int = ATTEMPT_TTL_S) -> tuple[str, str]:
        """SET NX of the claim's attempt key by ``node`` (TAKE_LUA): ("taken" | "done" | "stale", holder).
        ``takeover``: an entry reclaimed from a node that sat on it; its claim is taken over if not dialled."""
        k = self.keys
        verdict, holder = await self.redis.eval(
            TAKE_LUA, 3, k.campaign_attempt(item.cid, item.n, item.attempt), k.campaign_leases(item.cid),
            k.campaign_contact(item.cid, item.n), item.n, str(item.attempt), node, ttl_s, "1" if takeover else "0")
        return str(verdict), str(holder)

    async def mark_in_progress(self, cid: str, n: str, attempt: int | str, node: str,
                               fields: Mapping[str, str]) -> None:
        """The contact ``in_progress`` with ``fields`` (counters moved as ``CampaignStore.set_status`` does),
        only while claim ``attempt`` is still ``node``'s; ``TakenOver`` if another node took it over."""
        k = self.keys
        flat = [x for kv in fields.items() for x in (kv[0], str(kv[1]))]
        try:
            await self.redis.eval(MARK_LUA, 2, k.campaign_attempt(cid, n, attempt), k.campaign_contact(cid, n),
                                  node, k.campaign(cid), "in_progress", *flat)
        except ResponseError as exc:
            if str(exc).startswith("NOTMINE"):
                raise TakenOver(f"campaign {cid} contact {n} claim {attempt} is another node's now") from None
            raise

    async def in_progress_on(self, cid: str, nodes: Collection[str]) -> list[tuple[str, dict[str, str]]]:
        """The leased contacts of campaign ``cid`` that are ``in_progress`` on one of ``nodes``: (n, fields)."""
        k = self.keys
        ns = [str(n) for n in await self.redis.zrange(k.campaign_leases(cid), 0, -1)]
        if not ns or not nodes:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for n in ns:
                p.hgetall(k.campaign_contact(cid, n))
            rows = await p.execute()
        return [(n, {str(a): str(b) for a, b in (row or {}).items()}) for n, row in zip(ns, rows)
                if row and row.get("status") == "in_progress" and row.get("node") in nodes]

    async def settle_lost(self, cid: str, n: str, holder: str, node: str, attempt_id: str, status: str,
                          fields: Mapping[str, str]) -> bool:
        """The leader closes attempt ``attempt_id`` that lost ``node`` left ``in_progress`` on contact ``n``
        (``status`` with ``fields``, off the leases and the due line), fenced by ``holder`` (``Fenced`` if
        another node leads). False when the contact is no longer in that attempt on that node (settled
        already, or its outcome came first)."""
        k = self.keys
        flat = [x for kv in fields.items() for x in (kv[0], str(kv[1]))]
        done = await run_fenced(self.redis, k.leader, SETTLE_LOST_BODY, holder,
                                [k.campaign_contact(cid, n), k.campaign_leases(cid), k.campaign_due(cid)],
                                [n, node, attempt_id, k.campaign(cid), status, *flat])
        return bool(done)

    async def attempt_holder(self, cid: str, n: str, attempt: int | str) -> str:
        """The node that took claim ``attempt`` of contact ``n`` ("" if nobody)."""
        return str(await self.redis.get(self.keys.campaign_attempt(cid, n, attempt)) or "")

    async def ack(self, item: WorkItem) -> None:
        """Done with an entry: acknowledged and deleted (the stream holds only work not yet handled)."""
        key = self.keys.campaign_work(item.cid)
        async with self.redis.pipeline(transaction=True) as p:
            p.xack(key, GROUP, item.entry)
            p.xdel(key, item.entry)
            await p.execute()

    async def backlog(self, cid: str) -> dict[str, int]:
        """Entries in the stream (not handled yet) and those read but not acknowledged."""
        key = self.keys.campaign_work(cid)
        length = int(await self.redis.xlen(key))
        try:
            pending = await self.redis.xpending(key, GROUP)
        except ResponseError:      # no group yet
            return {"queued": length, "pending": 0}
        return {"queued": length, "pending": int(pending.get("pending") or 0)}
