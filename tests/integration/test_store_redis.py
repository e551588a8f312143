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
