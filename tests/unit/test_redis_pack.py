"""HiredisPackedConnection packs commands with hiredis: the same bytes as redis-py's own packer."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from ivr.store.redis_store import HiredisPackedConnection

CASES: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 1, "ivr:call:1795666331.517", 2592000, "1", "started_at", 1795666331.517, "n", 0.1),
    ("HSET", "k", "name", "Zoë 张伟 مریم", "neg", -7, "big", 10 ** 20, "f", 1e-7, "inf", float("inf")),
    ("SET", b"raw\x00bytes", bytearray(b"ba"), memoryview(b"mv")),
    ("CONFIG GET", "maxmemory"),           # a two-word command name is split, as redis-py does
    (b"CLIENT SETNAME", "ivr"),
    ("SET", "k", ""),
]


@pytest.mark.parametrize("args", CASES, ids=[str(c[0]) for c in CASES])
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    assert b"".join(HiredisPackedConnection().pack_command(*args)) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, object(), ["list"]])
def test_values_redis_py_refuses_are_refused_the_same_way(bad: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError, match="Invalid input of type"):
        HiredisPackedConnection().pack_command("SET", "k", bad)


def test_pipelines_pack_through_it() -> None:
    conn = HiredisPackedConnection()
    packed = b"".join(conn.pack_commands([("SET", "a", 1), ("GET", "a")]))
    assert packed == b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"


def test_store_uses_it_for_tcp_urls_only() -> None:
    from ivr.store.redis_store import Store

    tcp = Store.from_url("redis://127.0.0.1:6379/0")
    assert tcp.redis.connection_pool.connection_class is HiredisPackedConnection
    unix = Store.from_url("unix:///tmp/redis.sock")
    assert unix.redis.connection_pool.connection_class is not HiredisPackedConnection


def test_the_password_goes_to_every_connection() -> None:
    from ivr.app.config import RedisConfig
    from ivr.store.redis_store import Store

    store = Store.from_config(RedisConfig(url="redis://127.0.0.1:6379/0", prefix="p", password="pw"))
    assert store.redis.connection_pool.connection_kwargs["password"] == "pw" and store.keys.prefix == "p"
    assert "password" not in Store.from_url("redis://127.0.0.1:6379/0").redis.connection_pool.connection_kwargs
