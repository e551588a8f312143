"""The one writer of call-record fields outside the record's own Lua scripts (ivr/store/redis_store.py:
WRITE_LUA, FINISH_LUA). Everything that tags a call record in a transaction with its own writes (a
disposition, a callback made, a survey score) stages its fields here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .keys import Keys


def stage_call_fields(p: Any, keys: Keys, uid: str, fields: Mapping[str, Any], ttl: int | None = None) -> None:
    """Add to pipeline ``p``: set ``fields`` on call ``uid``'s record (and, with ``ttl``, renew its TTL)."""
    p.hset(keys.call(uid), mapping=dict(fields))
    if ttl is not None:
        p.expire(keys.call(uid), ttl)
