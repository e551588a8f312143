"""How the store connects: to one Redis by URL, or to the primary that Sentinel names.

With Sentinel, every new connection asks the Sentinels for the current primary of ``master_name`` (redis-py's
``SentinelConnectionPool``); a failover therefore costs the commands in flight when the primary died, each
answered with a connection error (``StoreUnavailable`` to the store's callers), and the first command after
the promotion reaches the new primary. A demoted primary's READONLY answer is turned into a reconnect too,
and open connections move to a new primary within ``FOLLOW_S`` even when the old one stays up.
Timeouts and retries are the same either way: one quick retry of a command whose connection failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import parse_qs, urlparse

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
    HAVE_HIREDIS = True
except ImportError:   # pragma: no cover - hiredis is a dependency; redis-py packs commands itself without it
    HAVE_HIREDIS = False

# The data connections' timeouts and retry (as the store has always used them): a connect must succeed within
# 2 s, an answer come within 5 s; a command whose connection failed or timed out is tried once more at once.
DATA_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 15,
                                 "retry_on_timeout": True}
# Asking a Sentinel is quick or that Sentinel is gone: the next one is asked (redis-py moves on by itself).
SENTINEL_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 2}
FOLLOW_S = 1.0   # how often a Sentinel client asks which node is the primary while its connections are open


class _HiredisPacking:
    """Commands packed by hiredis (C) rather than by redis-py's Python packer: the record writes of a busy line
    carry many arguments, and packing them was the largest single cost of a call in the controller (13 us
    against 1.6 us for a 30-argument EVALSHA). Same arguments, same bytes on the wire (floats by repr, as
    redis-py does); bool and None are refused with redis-py's DataError."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = tuple(first.encode().split()) + args[1:]
        elif b" " in first:
            args = tuple(first.split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
        for a in args:
            if isinstance(a, bool) or not isinstance(a, (str, bytes, int, float)):
                raise DataError(f"Invalid input of type: {type(a).__name__!r}. "
                                "Convert to a bytes, string, int or float first.")
        return [hiredis.pack_command(args)]


class HiredisPackedConnection(_HiredisPacking, Connection):
    """A TCP connection to one Redis whose commands hiredis packs (see ``_HiredisPacking``)."""


class HiredisPackedSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    """A connection to the primary Sentinel names, whose commands hiredis packs (see ``_HiredisPacking``)."""


class FollowingSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool asks the Sentinels only when it opens a connection: after a failover in which
    the old primary stays up (``SENTINEL FAILOVER``, a partition that heals), open connections would go on
    writing to it until Sentinel demotes it, seconds later, and those writes would then be dropped. This pool
    also asks, at most every ``FOLLOW_S``, when a connection is taken: a new primary closes the idle
    connections, and a connection taken while still on the old one is reopened on the new one first."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self._asked = 0.0

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        now = time.monotonic()
        if self.is_master and now - self._asked >= FOLLOW_S:
            self._asked = now
            try:
                await self.get_master_address()   # a new address disconnects the idle connections
            except (RedisConnectionError, RedisTimeoutError):
                pass   # no Sentinel answers: the primary may still be there; the connection will tell
        conn = await super().get_connection(*args, **options)   # (no arguments: redis-py's current call)
        master = self.master_address
        if self.is_master and master is not None and (conn.host, conn.port) != tuple(master):
            await conn.disconnect()   # taken while on the old primary: reopen on the one Sentinel names now
            try:
                await conn.connect()
            except BaseException:
                await self.release(conn)
                raise
        return conn


def parse_address(text: str, what: str = "redis.sentinels") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a (host, port) pair; ValueError naming ``what`` otherwise."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: expected host:port, got {text!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class UrlParts:
    """What a Sentinel connection keeps of ``redis.url``: the database number and TLS."""
    db: int = 0
    ssl: bool = False


def url_parts(url: str) -> UrlParts:
    """The database (``/N`` or ``?db=N``) and whether TLS is asked for (``rediss://``) in a Redis URL."""
    parsed = urlparse(url)
    db_text = parse_qs(parsed.query).get("db", [""])[0] or parsed.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"redis.url: the database must be a number, got {db_text!r} in {url!r}")
    return UrlParts(db=int(db_text), ssl=parsed.scheme == "rediss")


def url_client(url: str, password: str = "") -> aioredis.Redis:
    """An asyncio client of the one Redis at ``url``; ``password`` (if any) is sent on every connection."""
    extra: dict[str, Any] = {}
    if HAVE_HIREDIS and url.startswith("redis://"):
        extra["connection_class"] = HiredisPackedConnection
    if password:
        extra["password"] = password
    return aioredis.from_url(url, decode_responses=True, **DATA_TIMEOUTS, **extra)


def sentinel_client(sentinels: Sequence[str], master_name: str, *, password: str = "",
                    url: str = "redis://") -> tuple[aioredis.Redis, Sentinel]:
    """An asyncio client of the primary that the Sentinels at ``sentinels`` ("host:port") name for
    ``master_name``, and the Sentinel manager behind it (close both). ``password`` authenticates to the
    Sentinels and to the data nodes alike; ``url`` gives the database number and TLS (rediss://)."""
    if not sentinels:
        raise ValueError("redis.sentinels: at least one host:port")
    addresses = [parse_address(s) for s in sentinels]
    parts = url_parts(url)
    auth: dict[str, Any] = {"password": password} if password else {}
    manager = Sentinel(addresses, sentinel_kwargs={**SENTINEL_TIMEOUTS, **auth}, **auth)
    extra: dict[str, Any] = {"ssl": True} if parts.ssl else {}
    if HAVE_HIREDIS and not parts.ssl:
        extra["connection_class"] = HiredisPackedSentinelConnection
    client = manager.master_for(master_name, connection_pool_class=FollowingSentinelPool, decode_responses=True,
                                db=parts.db, **DATA_TIMEOUTS, **extra)
    return client, manager


async def close_sentinel(manager: Sentinel) -> None:
    """Close the connections to the Sentinels themselves (the data client is closed on its own)."""
    await manager.aclose()
