"""The Redis side of webhooks: one event stream, a consumer group per webhook, a lease per webhook, and each
webhook's recent deliveries and dead letters.

* ``publish``: one XADD to ``{p}:events`` (capped, approximately, at ``EVENTS_MAXLEN``).
* A webhook's sender reads the stream through its consumer group ``webhook:<name>`` (made when the controller
  starts, before anything is published; a new webhook starts with the events after that): first the entries left
  pending by any consumer (XAUTOCLAIM: a sender killed mid-delivery), then new ones (XREADGROUP ``>``); an
  entry is acknowledged (XACK) once delivered (2xx) or dead-lettered.
* Only the holder of ``{p}:webhook:<name>:lock`` delivers that webhook's events: one in flight per webhook,
  in stream order, across every node.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .errors import Translating
from .keys import Keys

EVENTS_MAXLEN = 1_000_000      # the stream keeps about this many events (a receiver down for days still catches up)
LOG_KEEP = 200                 # recent delivery attempts kept per webhook
DEAD_KEEP = 10_000             # dead letters kept per webhook
# KEYS: the lock. ARGV: the holder, the lease in ms. Take the lock if free or ours; 1 if we hold it now.
LEASE_LUA = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS: the lock. ARGV: the holder. Let go of the lock if ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Entry = tuple[str, dict[str, str]]     # (stream id, fields)


def group_name(webhook: str) -> str:
    return f"webhook:{webhook}"


class WebhookStore(Translating):
    """The event stream and the per-webhook delivery state."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self._lease: Any = None
        self._release: Any = None

    # -------------------------------------------------------------- publishing
    async def publish(self, fields: Mapping[str, str]) -> str:
        """Append one event (fields id, type, created, data); returns its stream id."""
        return str(await self.redis.xadd(self.keys.events, dict(fields), maxlen=EVENTS_MAXLEN, approximate=True))

    # -------------------------------------------------------------- consuming
    async def ensure_group(self, webhook: str) -> None:
        """The webhook's consumer group (the stream is made if absent). A new group starts after the events in the
        stream now (a webhook added later is not sent the history); an existing one keeps its place."""
        try:
            await self.redis.xgroup_create(self.keys.events, group_name(webhook), id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, webhook: str, consumer: str, count: int = 10) -> list[Entry]:
        """Entries delivered to some consumer of the group and not acknowledged (a sender that died), taken over
        by ``consumer``, oldest first. Only the lease holder calls this, so none of them is in flight elsewhere."""
        out: list[Entry] = []
        start = "0-0"
        while len(out) < count:
            reply = await self.redis.xautoclaim(self.keys.events, group_name(webhook), consumer, 0,
                                                start_id=start, count=count)
            start, entries = str(reply[0]), reply[1]
            out.extend((str(i), dict(f)) for i, f in entries if f is not None)
            if start == "0-0" or not entries:
                break
        return sorted(out, key=lambda e: tuple(int(x) for x in e[0].split("-")))[:count]

    async def read_new(self, webhook: str, consumer: str, count: int = 10, block_ms: int = 2000) -> list[Entry]:
        """New entries for the group (waiting up to ``block_ms``), now pending on ``consumer``."""
        reply = await self.redis.xreadgroup(group_name(webhook), consumer, {self.keys.events: ">"},
                                            count=count, block=block_ms)
        return [(str(i), dict(f)) for _, entries in (reply or []) for i, f in entries]

    async def ack(self, webhook: str, entry_id: str) -> None:
        await self.redis.xack(self.keys.events, group_name(webhook), entry_id)

    async def backlog(self, webhook: str) -> dict[str, int]:
        """``pending`` (read, not acknowledged) and ``lag`` (not read yet) of the webhook's group."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.events)
        except ResponseError:       # no stream yet
            return {"pending": 0, "lag": 0}
        for g in groups:
            if g.get("name") == group_name(webhook):
                lag = g.get("lag")
                return {"pending": int(g.get("pending") or 0), "lag": int(lag) if lag is not None else -1}
        return {"pending": 0, "lag": 0}

    # -------------------------------------------------------------- the lease
    async def lease(self, webhook: str, holder: str, ms: int) -> bool:
        """Take or renew the webhook's lease for ``ms``; False while another holder has it."""
        if self._lease is None:
            self._lease = self.redis.register_script(LEASE_LUA)
        return bool(await self._lease(keys=[self.keys.webhook_lock(webhook)], args=[holder, ms]))

    async def release(self, webhook: str, holder: str) -> None:
        if self._release is None:
            self._release = self.redis.register_script(RELEASE_LUA)
        await self._release(keys=[self.keys.webhook_lock(webhook)], args=[holder])

    # -------------------------------------------------------------- history
    async def log_attempt(self, webhook: str, attempt: Mapping[str, Any]) -> None:
        key = self.keys.webhook_log(webhook)
        async with self.redis.pipeline(transaction=False) as p:
            p.lpush(key, json.dumps(dict(attempt), separators=(",", ":")))
            p.ltrim(key, 0, LOG_KEEP - 1)
            await p.execute()

    async def dead_letter(self, webhook: str, entry_id: str, event: Mapping[str, Any], attempts: int,
                          error: str) -> None:
        """Keep an event given up on (newest first) and acknowledge it, in one transaction."""
        key = self.keys.webhook_dead(webhook)
        item = {"stream_id": entry_id, "event": dict(event), "attempts": attempts, "error": error,
                "at": round(time.time(), 3)}
        async with self.redis.pipeline(transaction=True) as p:
            p.lpush(key, json.dumps(item, separators=(",", ":"), default=str))
            p.ltrim(key, 0, DEAD_KEEP - 1)
            p.xack(self.keys.events, group_name(webhook), entry_id)
            await p.execute()

    async def recent(self, webhook: str, count: int = 50) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.redis.lrange(self.keys.webhook_log(webhook), 0, count - 1)]

    async def dead(self, webhook: str, count: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """How many dead letters the webhook has, and the newest ``count``."""
        key = self.keys.webhook_dead(webhook)
        async with self.redis.pipeline(transaction=False) as p:
            p.llen(key)
            p.lrange(key, 0, count - 1)
            total, items = await p.execute()
        return int(total), [json.loads(x) for x in items]
