"""The call record's finish on a real Redis: one atomic Lua call, exactly one stream entry per call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import AsyncIterator

import pytest

from ivr.stack import start_scratch_redis
from ivr.store.redis_store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `bash scripts/install.sh` first")
    proc, port = start_scratch_redis(tmp_path)
    s = Store.from_url(f"redis://127.0.0.1:{port}/0", "t")
    try:
        yield s
    finally:
        await s.close()
        proc.terminate()
        proc.wait(timeout=10)


async def test_finish_writes_once_and_appends_the_merged_record_once(store: Store) -> None:
    await store.call_update("1.1", {"caller": "5550001", "menu": "main", "path": json.dumps(["a", "b"])})
    rec = await store.call_finish("1.1", {"outcome": "self_service", "ended_at": 12.5, "uniqueid": "forged"})
    assert rec["uniqueid"] == "1.1" and rec["finished"] == "1" and rec["outcome"] == "self_service"
    assert rec["path"] == ["a", "b"] and rec["caller"] == "5550001"
    # a second finish (a duplicate Hangup, or a retry whose reply was lost) changes nothing
    again = await store.call_finish("1.1", {"outcome": "abandoned"})
    assert again["outcome"] == "self_service"
    entries = await store.recent_calls(10)
    assert len(entries) == 1
    e = entries[0]
    assert e["uniqueid"] == "1.1" and e["outcome"] == "self_service" and e["path"] == ["a", "b"]
    assert e["ended_at"] == "12.5" and e["caller"] == "5550001"
    ttl = await store.redis.ttl(store.keys.call("1.1"))
    assert ttl > 86400


async def test_finish_of_a_call_never_seen_still_leaves_a_record(store: Store) -> None:
    rec = await store.call_finish("2.2", {"outcome": "before_ivr", "hangup_cause": "Normal Clearing"})
    assert rec["uniqueid"] == "2.2" and rec["path"] == []
    assert [e["uniqueid"] for e in await store.recent_calls(10)] == ["2.2"]


async def test_batch_applies_many_calls_in_order_in_one_round_trip(store: Store) -> None:
    replies = await store.call_batch([
        ("setnx", "3.1", {"caller": "5550003", "started_at": 1.0}),
        ("setnx", "3.1", {"caller": "other", "queue": "refunds"}),   # first writer wins, new fields still set
        ("set", "3.2", {"menu": "main"}),
        ("get", "3.1", None),
        ("set", "3.1", {"answered_at": 5.0}),
        ("get", "3.1", None),
        ("get", "3.9", None),                                        # no such call
    ])
    assert replies[:3] == [None, None, None]
    assert replies[3]["caller"] == "5550003" and replies[3]["queue"] == "refunds"
    assert "answered_at" not in replies[3]                           # a get sees the writes before it only
    assert replies[5]["answered_at"] == "5.0" and replies[6] == {}
    assert await store.redis.ttl(store.keys.call("3.2")) > 86400


async def test_batch_error_of_one_operation_spares_the_others(store: Store) -> None:
    await store.redis.set(store.keys.call("4.bad"), "not a hash")          # a damaged key: WRONGTYPE
    replies = await store.call_batch([("set", "4.1", {"menu": "main"}), ("set", "4.bad", {"menu": "main"}),
                                      ("get", "4.bad", None), ("set", "4.2", {"menu": "main"})])
    assert replies[0] is None and replies[3] is None
    assert "WRONGTYPE" in str(replies[1]) and "WRONGTYPE" in str(replies[2])
    assert (await store.call_get("4.1"))["menu"] == "main" and (await store.call_get("4.2"))["menu"] == "main"
    with pytest.raises(Exception, match="WRONGTYPE"):
        await store.call_update("4.bad", {"menu": "x"})
    done = await store.call_finish_many([("4.1", {"outcome": "x"}), ("4.bad", {"outcome": "x"}),
                                         ("4.2", {"outcome": "y"})])
    assert done[0]["outcome"] == "x" and done[2]["outcome"] == "y" and isinstance(done[1], Exception)
    assert sorted(e["uniqueid"] for e in await store.recent_calls(10)) == ["4.1", "4.2"]


async def test_finish_many_loads_the_script_again_after_redis_lost_it(store: Store) -> None:
    await store.call_finish("5.0", {"outcome": "x"})
    await store.redis.script_flush()                                        # as after a restart without it
    done = await store.call_finish_many([("5.1", {"outcome": "a"}), ("5.2", {"outcome": "b"})])
    assert [d["outcome"] for d in done] == ["a", "b"]
    assert len(await store.recent_calls(10)) == 3


async def test_batch_writes_load_their_script_again_after_redis_lost_it(store: Store) -> None:
    await store.call_update("6.1", {"menu": "main"})
    await store.redis.script_flush()
    replies = await store.call_batch([("setnx", "6.1", {"menu": "other", "caller": "5550006"}), ("get", "6.1", None)])
    assert replies[0] is None and replies[1]["menu"] == "main" and replies[1]["caller"] == "5550006"


async def test_caller_histories_many_calls_one_round_trip_and_after_redis_lost_the_script(store: Store) -> None:
    from ivr.continuity import Continuity, ContinuityConfig

    c = Continuity(ContinuityConfig(history=2), store)
    await store.redis.sadd(f"{store.keys.prefix}:caller:+5557001:live", "a1", "a2")
    calls = [({"uniqueid": f"a{i}", "caller": "5557001", "outcome": "answered" if i == 2 else "self_service",
               "answered_at": "1700000000.5" if i == 2 else "", "menu": "main"}, None) for i in (1, 2, 3)]
    await c.remember_many(calls)
    key = f"{store.keys.prefix}:caller:+5557001"
    assert await store.redis.llen(f"{key}:calls") == 2                    # capped at history=2, newest first
    assert await store.redis.scard(f"{key}:live") == 0
    assert await store.redis.hget(key, "last_answered") == "1700000000.5"
    await store.redis.script_flush()
    await c.remember({"uniqueid": "a4", "caller": "5557001", "outcome": "self_service", "menu": "main"})
    first = await store.redis.lindex(f"{key}:calls", 0)
    assert first is not None and "a4" in first
