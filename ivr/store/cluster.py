"""Agents' busy state shared by the nodes of a cluster (keys: ivr/store/keys.py; the service:
ivr/cluster/agents.py).

One hash, ``{p}:cluster:busy``: agent id -> ``"<node>:<uid>:<since_ms>:<seen_ms>"``, the node that has the
agent on a queue call, the caller's Uniqueid there, when the call was connected and when that node last
confirmed it. Every change is made by a Lua script that also PUBLISHes it on ``{p}:cluster:agent-events``,
so the write and its announcement are one step and subscribers see changes in the order they were made.

Times come from Redis (``TIME``), never from a node's clock: entries written by different machines are
compared with one clock. An entry is *stale* when its node has not confirmed it for ``stale_ms`` (a node
that died, or lost Redis, for that long) or when its call is older than ``max_call_ms``; any node may
remove a stale entry. A node removes its own entries only by compare-and-delete: never another node's,
never a newer call's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from .errors import StoreUnavailable, Translating, translate
from .keys import Keys

log = logging.getLogger(__name__)

BUSY = "busy"
FREE = "free"

# ARGV[1] is the wall time of Redis in ms for every script below (TIME; scripts replicate their effects).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function announce(kind, agent, entry)
  redis.call('PUBLISH', KEYS[2], cjson.encode({kind = kind, agent = agent, entry = entry}))
end
local function starts(s, prefix) return string.sub(s, 1, #prefix) == prefix end
local function times(entry)
  local since, seen = string.match(entry, ':(%d+):(%d+)$')
  return tonumber(since or '0'), tonumber(seen or '0')
end
"""

# KEYS[1] hash, KEYS[2] channel; ARGV[1] agent, ARGV[2] node, ARGV[3] uid. Marks the agent busy on this node's
# call; the same call again (a retry) only refreshes it. Returns {previous entry or '', new entry}.
SET_BUSY = _NOW + """
local own = ARGV[2] .. ':' .. ARGV[3] .. ':'
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local since = now
if cur and starts(cur, own) then since = times(cur) end
local entry = own .. since .. ':' .. now
redis.call('HSET', KEYS[1], ARGV[1], entry)
if not (cur and starts(cur, own)) then announce('busy', ARGV[1], entry) end
return {cur or '', entry}
"""

# KEYS[1] hash, KEYS[2] channel; ARGV[1] agent, ARGV[2] node, ARGV[3] uid. Removes the agent's entry only if it
# is still this node's entry for that call. Returns 1 if removed.
SET_FREE = _NOW + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and starts(cur, ARGV[2] .. ':' .. ARGV[3] .. ':') then
  redis.call('HDEL', KEYS[1], ARGV[1])
  announce('free', ARGV[1], cur)
  return 1
end
return 0
"""

# KEYS[1] hash, KEYS[2] channel; ARGV[1] node, ARGV[2] max_call_ms, then agent, uid, ... : the node's queue calls
# in progress. Each is confirmed (seen = now), or written if missing; an entry of the node that is not among
# them is removed; a call older than max_call_ms is no longer confirmed. Returns the agents whose entry
# belongs to another node (the agent is on calls on two nodes) followed by that entry.
CONFIRM = _NOW + """
local node = ARGV[1] .. ':'
local live = {}
local out = {}
for i = 3, #ARGV, 2 do
  local agent, own = ARGV[i], ARGV[1] .. ':' .. ARGV[i + 1] .. ':'
  live[agent] = own
  local cur = redis.call('HGET', KEYS[1], agent)
  if not cur then
    local entry = own .. now .. ':' .. now
    redis.call('HSET', KEYS[1], agent, entry)
    announce('busy', agent, entry)
  elseif starts(cur, own) then
    local since = times(cur)
    if now - since <= tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], agent, own .. since .. ':' .. now) end
  elseif not starts(cur, node) then
    out[#out + 1] = agent
    out[#out + 1] = cur
  end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local agent, cur = all[i], all[i + 1]
  if starts(cur, node) and not (live[agent] and starts(cur, live[agent])) then
    redis.call('HDEL', KEYS[1], agent)
    announce('free', agent, cur)
  end
end
return out
"""

# KEYS[1] hash, KEYS[2] channel; ARGV[1] stale_ms, ARGV[2] max_call_ms. Removes every entry not confirmed for
# stale_ms or older than max_call_ms. Returns agent, entry, ... of those removed.
SWEEP = _NOW + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local since, seen = times(all[i + 1])
  if now - seen > tonumber(ARGV[1]) or now - since > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
    announce('free', all[i], all[i + 1])
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class BusyEntry:
    """One agent's call on one node, as the hash holds it (``raw`` is the stored string, compared as is)."""

    node: str
    uid: str
    since: float     # when the call was connected (Redis time, epoch seconds)
    seen: float      # when its node last confirmed it
    raw: str

    @classmethod
    def parse(cls, raw: str) -> "BusyEntry":
        """``"<node>:<uid>:<since_ms>:<seen_ms>"``; ValueError naming the entry if it is not one."""
        parts = raw.split(":")
        node, uid, times = parts[0], ":".join(parts[1:-2]), parts[-2:]
        if len(parts) < 4 or not node or not uid or not all(t.isdigit() for t in times):
            raise ValueError(f"busy entry: expected <node>:<uid>:<since_ms>:<seen_ms>, got {raw!r}")
        return cls(node, uid, int(times[0]) / 1000, int(times[1]) / 1000, raw)


@dataclass(frozen=True, slots=True)
class BusyEvent:
    """A change announced on the channel: ``kind`` is ``busy`` or ``free``."""

    kind: str
    agent: str
    entry: BusyEntry


def _entries(raw: Mapping[str, str]) -> dict[str, BusyEntry]:
    out = {}
    for agent, value in raw.items():
        try:
            out[agent] = BusyEntry.parse(value)
        except ValueError as exc:
            log.warning("cluster busy state: agent %s: %s", agent, exc)
    return out


def _pairs(flat: Iterable[str]) -> list[tuple[str, str]]:
    items = list(flat)
    return list(zip(items[::2], items[1::2]))


def parse_event(data: str) -> BusyEvent:
    """A message of the agent-events channel; ValueError if it is not one."""
    try:
        msg = json.loads(data)
        kind, agent, entry = str(msg["kind"]), str(msg["agent"]), str(msg["entry"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"agent event: not a busy/free message: {data[:80]!r}") from exc
    if kind not in (BUSY, FREE):
        raise ValueError(f"agent event: kind must be busy or free, got {kind!r}")
    return BusyEvent(kind, agent, BusyEntry.parse(entry))


class ClusterAgentStore(Translating):
    """The busy hash, its scripts and the channel that announces its changes."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def _eval(self, script: str, *args: str | int) -> object:
        return await self.redis.eval(script, 2, self.keys.cluster_busy, self.keys.cluster_agent_events, *args)

    async def set_busy(self, agent: str, node: str, uid: str) -> tuple[BusyEntry | None, BusyEntry]:
        """The agent is on call ``uid`` on ``node``: (the entry it replaced, if another, the new entry)."""
        reply: list[str] = await self._eval(SET_BUSY, agent, node, uid)  # type: ignore[assignment]  # 2 strings
        prev, entry = reply
        return (BusyEntry.parse(prev) if prev else None), BusyEntry.parse(entry)

    async def set_free(self, agent: str, node: str, uid: str) -> bool:
        """Call ``uid`` on ``node`` ended: remove the agent's entry if it is still that one (True if removed)."""
        return bool(await self._eval(SET_FREE, agent, node, uid))

    async def confirm(self, node: str, calls: Mapping[str, str], max_call_ms: int) -> dict[str, BusyEntry]:
        """Bring ``node``'s entries in line with its calls in progress (agent -> uid): confirm or write them,
        remove the others of ``node``. Returns the agents of ``calls`` whose entry is another node's."""
        args = [x for kv in calls.items() for x in kv]
        flat = await self._eval(CONFIRM, node, max_call_ms, *args)
        return _entries(dict(_pairs(flat)))  # type: ignore[arg-type]  # a list of strings

    async def sweep(self, stale_ms: int, max_call_ms: int) -> dict[str, BusyEntry]:
        """Remove entries unconfirmed for ``stale_ms`` or older than ``max_call_ms``; returns those removed."""
        flat = await self._eval(SWEEP, stale_ms, max_call_ms)
        return _entries(dict(_pairs(flat)))  # type: ignore[arg-type]  # a list of strings

    async def all(self) -> dict[str, BusyEntry]:
        """Every agent on a call on some node: agent -> entry."""
        return _entries(await self.redis.hgetall(self.keys.cluster_busy))

    async def listen(self, on_event: Callable[[BusyEvent], None],
                     on_subscribed: Callable[[], None] | None = None, poll: float = 1.0) -> None:
        """Call ``on_event`` for each change announced, in order, until cancelled. ``on_subscribed`` runs once
        the subscription holds (read the hash after it: nothing announced from then on is missed). Raises
        ``StoreUnavailable`` when the connection is lost (subscribe again: messages meanwhile are lost)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(self.keys.cluster_agent_events)
                if on_subscribed is not None:
                    on_subscribed()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        event = parse_event(str(msg["data"]))
                    except ValueError as exc:
                        log.warning("%s", exc)
                        continue
                    try:
                        on_event(event)
                    except Exception:
                        log.exception("agent events: handling %s %s failed", event.kind, event.agent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                new = translate(exc)
                raise (new if new is not exc else StoreUnavailable(f"agent events: {exc}")) from exc
        finally:
            try:
                await pubsub.aclose()
            except Exception as exc:   # the connection is gone already
                log.debug("agent events: closing the subscription: %s", exc)
