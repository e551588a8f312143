"""The nodes of a cluster and the callers waiting on each (keys: ivr/store/keys.py; the logic: ivr/cluster/).

Each node writes a heartbeat into one hash and keeps a register of its waiting callers: a zset (uid -> the
caller's place: when they first joined), a hash with what a callback needs (number, queue, language) and
one zset per queue (for the order across nodes). When a node is lost, the leader moves its register into
the callback line in one fenced script per batch (``MOVE_LUA``): each caller becomes a callback scored by
their place, exactly once (a marker key per uid, set in the same script), and only while the writer still
holds the lease.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import CampaignKeys, Keys
from .leader import LeaderStore

MOVED_TTL_S = 7 * 86400   # how long a moved caller's marker stops a second move (a node that comes back)

# After the fence (KEYS[1] lease, ARGV[1] holder). KEYS[2] the node's waiting zset, KEYS[3] its callers hash,
# KEYS[4] callbacks pending, KEYS[5] the callback id counter, KEYS[5 + i] the moved marker of the i-th uid.
# ARGV[2] the callback key prefix, ARGV[3] the node's queue zset prefix, ARGV[4] now, ARGV[5] the lost node,
# ARGV[6] the marker TTL, ARGV[6 + i] the i-th uid (oldest place first, so ids grow in the callers' order).
# Returns per uid still registered: {uid, what (moved | moved_before | anonymous), callback id, queue, place,
# number, lang}.
MOVE_LUA = """
local out = {}
for i = 1, #ARGV - 6 do
  local uid = ARGV[6 + i]
  local place = redis.call('ZSCORE', KEYS[2], uid)
  if place then
    local ok, info = pcall(cjson.decode, redis.call('HGET', KEYS[3], uid) or '')
    if not ok or type(info) ~= 'table' then info = {} end
    local number, queue = tostring(info.number or ''), tostring(info.queue or '')
    local lang = tostring(info.lang or '')
    if lang == '' then lang = 'en' end
    redis.call('ZREM', KEYS[2], uid)
    redis.call('HDEL', KEYS[3], uid)
    if queue ~= '' then redis.call('ZREM', ARGV[3] .. queue, uid) end
    local had = redis.call('GET', KEYS[5 + i])
    if number == '' then
      out[#out + 1] = {uid, 'anonymous', '', queue, place, '', lang}
    elseif had then
      out[#out + 1] = {uid, 'moved_before', had, queue, place, number, lang}
    else
      local id = tostring(redis.call('INCR', KEYS[5]))
      redis.call('HSET', ARGV[2] .. id, 'id', id, 'number', number, 'queue', queue,
                 'lang', lang, 'call_uid', uid, 'caller', tostring(info.caller or number),
                 'requested_at', ARGV[4], 'place', place, 'status', 'pending', 'attempts', '0',
                 'source', 'node_lost', 'reason', 'node_lost', 'node', ARGV[5])
      redis.call('ZADD', KEYS[4], place, id)
      redis.call('SET', KEYS[5 + i], id, 'EX', ARGV[6])
      out[#out + 1] = {uid, 'moved', id, queue, place, number, lang}
    end
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Waiter:
    """One caller in a node's register: their uid, place (epoch s of their first join) and what a callback
    needs (``number``: digits, '' when withheld; ``queue``; ``lang``; ``caller``: the caller ID as received)."""

    uid: str
    queue: str
    place: float
    number: str = ""
    lang: str = ""
    caller: str = ""
    origin: str = ""     # a call we placed: its account code (cb:<callback id>, c:<campaign>:<contact>:<try>)

    def info(self) -> str:
        info = {"number": self.number, "queue": self.queue, "lang": self.lang, "caller": self.caller,
                "place": self.place}
        if self.origin:
            info["origin"] = self.origin
        return json.dumps(info, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Moved:
    """What the sweep did with one of a lost node's waiting callers."""

    uid: str
    what: str            # moved (a callback now), moved_before (by an earlier sweep), anonymous (no number)
    callback_id: str
    queue: str
    place: float
    number: str = ""
    lang: str = ""


class ClusterStore(Translating):
    """Heartbeats, the waiting registers and the fenced move of a lost node's callers into callbacks."""

    def __init__(self, client: aioredis.Redis, keys: Keys, leader: LeaderStore) -> None:
        self.redis, self.keys, self.leader = client, keys, leader

    # ------------------------------------------------------------- heartbeats
    async def heartbeat(self, node: str, info: Mapping[str, Any]) -> dict[str, str]:
        """Write ``node``'s heartbeat and read every node's, in one round trip (node -> JSON)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(self.keys.cluster_nodes, node, json.dumps(dict(info), separators=(",", ":")))
            p.hgetall(self.keys.cluster_nodes)
            _, seen = await p.execute()
        return dict(seen)

    async def nodes(self) -> dict[str, str]:
        return dict(await self.redis.hgetall(self.keys.cluster_nodes))

    async def forget_node(self, node: str) -> bool:
        """Drop a node long gone from the heartbeats (only when nothing waits in its register any more)."""
        if await self.redis.zcard(self.keys.cluster_waiting(node)):
            return False
        return bool(await self.redis.hdel(self.keys.cluster_nodes, node))

    # --------------------------------------------------------------- register
    async def register(self, node: str, joined: Sequence[Waiter], left: Sequence[tuple[str, str]]) -> None:
        """Callers who joined a queue on ``node`` and callers who left it ((uid, queue): answered, gone, hung
        up), in one transaction. A uid both joined and left in the batch ends up absent (leaves are last)."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as p:
            for w in joined:
                p.zadd(k.cluster_waiting(node), {w.uid: w.place})
                p.zadd(k.cluster_waiting_queue(node, w.queue), {w.uid: w.place})
                p.hset(k.cluster_waiting_callers(node), w.uid, w.info())
            for uid, queue in left:
                p.zrem(k.cluster_waiting(node), uid)
                if queue:
                    p.zrem(k.cluster_waiting_queue(node, queue), uid)
                p.hdel(k.cluster_waiting_callers(node), uid)
            await p.execute()

    async def rebuild(self, node: str, waiting: Sequence[Waiter]) -> None:
        """Make ``node``'s register exactly ``waiting`` (after an AMI resync: the live queues). What the old
        register knew of a caller still waiting (number, language, an older place) is kept."""
        k = self.keys
        old = await self.redis.hgetall(k.cluster_waiting_callers(node))
        queues: set[str] = set()
        for raw in old.values():
            queues.add(str(_load(raw).get("queue") or ""))
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(k.cluster_waiting(node), k.cluster_waiting_callers(node),
                     *[k.cluster_waiting_queue(node, q) for q in sorted(queues) if q])
            for w in waiting:
                was = _load(old.get(w.uid))
                place = _float(was.get("place")) or w.place   # the join's: exact (QueueStatus has whole seconds)
                # the join's number wins: it was resolved (a campaign callee's channel shows our caller ID)
                number = str(was["number"]) if "number" in was else w.number
                merged = Waiter(w.uid, w.queue, place, number,
                                w.lang or str(was.get("lang") or ""), w.caller or str(was.get("caller") or ""),
                                w.origin or str(was.get("origin") or ""))
                p.zadd(k.cluster_waiting(node), {w.uid: place})
                p.zadd(k.cluster_waiting_queue(node, w.queue), {w.uid: place})
                p.hset(k.cluster_waiting_callers(node), w.uid, merged.info())
            await p.execute()

    async def waiting(self, node: str, count: int = 1000) -> list[tuple[str, float]]:
        """The oldest ``count`` callers of ``node``'s register: (uid, place), oldest first."""
        return [(str(u), float(s)) for u, s in
                await self.redis.zrange(self.keys.cluster_waiting(node), 0, count - 1, withscores=True)]

    async def waiting_count(self, nodes: Sequence[str]) -> list[int]:
        async with self.redis.pipeline(transaction=False) as p:
            for node in nodes:
                p.zcard(self.keys.cluster_waiting(node))
            return [int(n) for n in await p.execute()]

    async def oldest_in_queue(self, nodes: Sequence[str], queue: str) -> list[tuple[str, str, float]]:
        """The longest-waiting caller of ``queue`` on each of ``nodes`` that has one: (node, uid, place)."""
        if not nodes:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for node in nodes:
                p.zrange(self.keys.cluster_waiting_queue(node, queue), 0, 0, withscores=True)
            replies = await p.execute()
        return [(node, str(r[0][0]), float(r[0][1])) for node, r in zip(nodes, replies) if r]

    async def origins(self, callbacks: Sequence[str],
                      contacts: Sequence[tuple[str, str]]) -> tuple[dict[str, tuple[str, float | None]],
                                                                   dict[tuple[str, str], str]]:
        """For callers we called (their caller ID is not theirs, or their place is older than their join), in
        one round trip: each callback id's (number, place) and each campaign contact's ((cid, n)) number.
        Ids and contacts not found (or a malformed campaign id) are left out."""
        contacts = [(cid, n) for cid, n in contacts if _valid_campaign(cid)]
        if not callbacks and not contacts:
            return {}, {}
        async with self.redis.pipeline(transaction=False) as p:
            for cb_id in callbacks:
                p.hmget(self.keys.callback(cb_id), "number", "place")
            for cid, n in contacts:
                p.hget(CampaignKeys(self.keys, cid).contact(n), "number")
            replies = await p.execute()
        by_callback: dict[str, tuple[str, float | None]] = {}
        for cb_id, (number, place) in zip(callbacks, replies[:len(callbacks)]):
            if number:
                by_callback[cb_id] = (str(number), _float(place))
        by_contact = {pair: str(number) for pair, number in zip(contacts, replies[len(callbacks):]) if number}
        return by_callback, by_contact

    # ------------------------------------------------------------ dead nodes
    async def move_to_callbacks(self, holder: str, node: str, uids: Sequence[str], now: float) -> list[Moved]:
        """Turn ``node``'s waiting callers ``uids`` (oldest first) into callbacks at their place, in one fenced
        script: raises ``Fenced`` when ``holder`` no longer leads (nothing is written). Safe to repeat: a caller
        already moved (by this or another leader) is not moved again."""
        if not uids:
            return []
        k = self.keys
        keys = [k.cluster_waiting(node), k.cluster_waiting_callers(node), k.callbacks_pending, k.callback_seq,
                *[k.cluster_moved(uid) for uid in uids]]
        args = [k.callback(""), k.cluster_waiting_queue(node, ""), repr(round(now, 3)), node, MOVED_TTL_S, *uids]
        raw = await self.leader.eval_fenced(MOVE_LUA, holder, keys, args)
        return [Moved(str(uid), str(what), str(cb_id), str(queue), float(place), str(number), str(lang))
                for uid, what, cb_id, queue, place, number, lang in raw or []]

    async def moved(self, uid: str) -> str | None:
        """The callback id a lost node's waiting caller became (None: not moved)."""
        return await self.redis.get(self.keys.cluster_moved(uid))


def _valid_campaign(cid: str) -> bool:
    try:
        CampaignKeys(Keys(), cid)
    except ValueError:
        return False
    return True


def _float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _load(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
