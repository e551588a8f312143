"""Phone-login PINs are hashed (PBKDF2) in worker threads: the event loop, and every call on it, goes on."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from ivr.agents import roster as roster_mod
from ivr.app.config_load import from_mapping
from ivr.agents.roster import PIN_TRIES, Roster
from ivr.store.agents import AgentStore
from ivr.store.keys import Keys


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def hget(self, key: str, field: str) -> str | None:
        return self.data.get(key, {}).get(field)

    async def hset(self, key: str, field: str | None = None, value: str | None = None,
                   mapping: dict[str, str] | None = None) -> None:
        self.data.setdefault(key, {}).update({field: value} if field is not None else mapping or {})

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def pipeline(self, transaction: bool = True) -> "FakePipeline":
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.ops = redis, []

    async def __aenter__(self) -> "FakePipeline":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def incr(self, key: str) -> None:
        self.ops.append(key)

    def expire(self, key: str, seconds: int) -> None:
        pass

    async def execute(self) -> list[Any]:
        for key in self.ops:
            self.redis.data[key] = str(int(self.redis.data.get(key) or 0) + 1)
        return []


def make_roster() -> Roster:
    async def audit(*a: Any) -> None:
        return None
    cfg = from_mapping({"agents": [{"id": "1001"}, {"id": "1002"}]}, env={})
    redis, keys = FakeRedis(), Keys("ivr")
    store = SimpleNamespace(redis=redis, keys=keys, agents=AgentStore(redis, keys), audit=audit)
    return Roster(cfg, store)  # type: ignore[arg-type]


async def test_set_and_check_a_pin() -> None:
    roster = make_roster()
    await roster.set_pin("1001", "24680")
    assert "24680" not in str(roster.store.redis.data)
    assert await roster.check_pin("1001", "24680") is True
    assert await roster.check_pin("1001", "11111") is False
    assert await roster.check_pin("1002", "24680") is None
    for _ in range(PIN_TRIES):
        await roster.check_pin("1001", "11111")
    assert await roster.check_pin("1001", "24680") is False       # locked after PIN_TRIES wrong ones


async def test_the_event_loop_keeps_running_while_pins_are_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hash here can only finish once the event loop has gone round a few more times: were it run on the
    loop, the loop could not go round, the wait would time out and the test fail (no timing threshold)."""
    ticks = 0
    threads: set[str] = set()
    waited_for_loop: list[bool] = []
    real = roster_mod.pin_digest

    def digest_needing_the_loop(pin: str, salt: bytes, rounds: int) -> bytes:
        threads.add(threading.current_thread().name)
        start, deadline = ticks, time.monotonic() + 5
        while ticks < start + 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        waited_for_loop.append(ticks >= start + 3)
        return real(pin, salt, rounds)

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    roster = make_roster()
    await roster.set_pin("1001", "24680")
    monkeypatch.setattr(roster_mod, "pin_digest", digest_needing_the_loop)
    stop = asyncio.Event()
    tick_task = asyncio.ensure_future(ticker(stop))
    results = await asyncio.gather(*(roster.check_pin("1001", "24680" if i % 2 else "13579") for i in range(8)))
    await roster.set_pin("1002", "97531")
    stop.set()
    await tick_task
    assert waited_for_loop == [True] * 9                      # 8 checks and 1 set: the loop ran meanwhile
    assert threading.main_thread().name not in threads
    assert results.count(True) == 4 and results.count(False) == 4
