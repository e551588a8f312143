"""The shared side of the outbound guard (ivr/campaigns/outbound.py): the do-not-call list and the hourly caps.

Every node counts its dials in the same Redis keys, so the caps hold for the deployment, not per
node. The check and the count are one Lua script: two nodes cannot both take the last call of a cap.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import Keys

COUNT_TTL_S = 7200   # an hour's counters outlive their hour (a clock a little off on another node)
# KEYS: the do-not-call set, this hour's counter of the number, this hour's counter of all calls.
# ARGV: the E.164 number, the per-number cap, the global cap, the counters' TTL, "1" to count the call.
ADMIT_LUA = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'dnc' end
if ARGV[5] ~= '1' then return '' end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 'cap_number' end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[3]) then return 'cap_global' end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return ''
"""


def hour_of(now: float | None = None) -> str:
    """The clock hour (UTC) a dial is counted in, e.g. 2026120601."""
    return time.strftime("%Y%m%d%H", time.gmtime(now))


class OutboundStore(Translating):
    """The do-not-call check and the per-number and global hourly counters."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self._admit: Any = None     # registered on first use

    async def admit(self, number: str, *, per_number: int, global_cap: int, count: bool = True,
                    now: float | None = None) -> str:
        """'' when ``number`` (E.164) may be dialled (and, with ``count``, the dial is counted in this hour);
        else why not: ``dnc``, ``cap_number`` or ``cap_global``."""
        if self._admit is None:
            self._admit = self.redis.register_script(ADMIT_LUA)
        hour = hour_of(now)
        reply = await self._admit(keys=[self.keys.dnc, self.keys.outbound_number(hour, number),
                                        self.keys.outbound_hour(hour)],
                                  args=[number, per_number, global_cap, COUNT_TTL_S, "1" if count else "0"])
        return reply.decode() if isinstance(reply, bytes) else str(reply or "")

    async def dialled(self, number: str = "", now: float | None = None) -> int:
        """Calls counted this hour, to ``number`` or (without one) in all."""
        hour = hour_of(now)
        key = self.keys.outbound_number(hour, number) if number else self.keys.outbound_hour(hour)
        return int(await self.redis.get(key) or 0)
