"""Lua scripts in pipelines: their SHA1 names and a pipeline that reloads them if Redis lost them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


def script_sha(text: str) -> str:
    """The SHA1 Redis names a Lua script by (EVALSHA)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


async def scripted_pipeline(client: aioredis.Redis, stage: Callable[[Any], None], scripts: Iterable[str]) -> list[Any]:
    """Run ``stage(pipeline)`` (commands of many calls, EVALSHA among them) in one round trip, errors
    returned in place. If Redis had lost the scripts (a restart, SCRIPT FLUSH) they are loaded and the whole
    pipeline runs again: what ``stage`` adds must be safe to apply twice."""
    for attempt in range(2):
        async with client.pipeline(transaction=False) as p:
            stage(p)
            replies = list(await p.execute(raise_on_error=False))
        if attempt or not any(isinstance(r, NoScriptError) for r in replies):
            break
        for text in scripts:
            await client.script_load(text)
    return replies
