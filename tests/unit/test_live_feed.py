"""The live picture is built once a second for every reader: /api/v1/live and any number of event streams."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.api.access import AccessService
from ivr.api.app import LIVE_FEED, build_app
from ivr.api.live import LiveFeed
from ivr.api.services import Services

TOKEN = "viewer-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_readers_share_one_build_per_second() -> None:
    clock, release, built = Clock(), asyncio.Event(), []

    async def build() -> dict[str, Any]:
        built.append(clock.now)
        await release.wait()                  # slow, like 1,000 HGETALLs were
        return {"n": len(built)}
    feed = LiveFeed(build, max_age=1.0, clock=clock)
    readers = [asyncio.ensure_future(feed.snapshot()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*readers)
    assert feed.builds == 1 and len(built) == 1
    assert all(r == ({"n": 1}, '{"n": 1}') for r in results)
    clock.now += 0.9
    assert (await feed.snapshot())[0] == {"n": 1} and feed.builds == 1
    clock.now += 0.1                          # a second after the build started: the next one
    assert (await asyncio.gather(*(feed.snapshot() for _ in range(20))))[0][0] == {"n": 2}
    assert feed.builds == 2


async def test_a_failed_build_reaches_every_reader_and_the_next_call_tries_again() -> None:
    calls = []

    async def build() -> dict[str, Any]:
        calls.append(1)
        await asyncio.sleep(0)
        if len(calls) == 1:
            raise ConnectionError("Redis is away")
        return {"ok": True}
    feed = LiveFeed(build, clock=Clock())
    results = await asyncio.gather(*(feed.snapshot() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and len(calls) == 1
    assert (await feed.snapshot())[0] == {"ok": True} and len(calls) == 2


async def test_a_reader_that_leaves_does_not_cancel_the_build_others_wait_for() -> None:
    release = asyncio.Event()

    async def build() -> dict[str, Any]:
        await release.wait()
        return {"ok": True}
    feed = LiveFeed(build, clock=Clock())
    leaving, staying = asyncio.ensure_future(feed.snapshot()), asyncio.ensure_future(feed.snapshot())
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert (await staying)[0] == {"ok": True}
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_n_stream_clients_and_live_requests_cause_one_build_per_second() -> None:
    """Eight dashboards streaming and twenty /api/v1/live requests for about two seconds: the picture is
    built about once a second (before: once per client per second, and once per request)."""
    builds = []

    async def state_picture() -> dict[str, Any]:
        builds.append(time.monotonic())
        return {"queues": {}, "agents": [], "callbacks_pending": 0}
    store: Any = SimpleNamespace(verify_token=_verify)
    ctl = SimpleNamespace(stopping=asyncio.Event())
    app = build_app(Services(access=AccessService(store, store, fail_limit=10, fail_window=60),
                             stopping=ctl.stopping))
    app[LIVE_FEED] = feed = LiveFeed(state_picture)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(app)) as client:
        async def dashboard() -> list[bytes]:
            events = []
            async with client.get("/api/v1/stream", headers=headers) as resp:
                assert resp.status == 200
                while len(events) < 3:
                    line = await resp.content.readline()
                    if line.startswith(b"data: "):
                        events.append(line)
            return events

        async def poller() -> None:
            for _ in range(4):
                async with client.get("/api/v1/live", headers=headers) as resp:
                    assert resp.status == 200 and (await resp.json())["callbacks_pending"] == 0
                await asyncio.sleep(0.5)
        started = time.monotonic()
        streams = await asyncio.gather(*(dashboard() for _ in range(8)), *(poller() for _ in range(5)))
        elapsed = time.monotonic() - started
        ctl.stopping.set()
    assert all(len(s) == 3 for s in streams[:8])
    # 8 x 3 events and 20 requests were served from the shared picture: one build per second of the test
    assert feed.builds == len(builds) <= int(elapsed) + 2, (len(builds), elapsed)
    gaps = [b - a for a, b in zip(builds, builds[1:])]
    assert all(g >= 0.99 for g in gaps), gaps


async def _verify(token: str) -> dict[str, Any] | None:
    return {"name": "wall", "role": "viewer"} if token == TOKEN else None


async def test_the_picture_counts_pending_callbacks_with_one_zcard() -> None:
    from ivr.api.live import LiveView
    from ivr.callbacks.queries import CallbackQueries
    from ivr.store.keys import Keys
    from ivr.store.selfservice import CallbackStore

    class Redis:
        async def zcard(self, key: str) -> int:
            assert key == "ivr:callbacks:pending"
            return 1234

        async def zrange(self, *a: Any) -> list[str]:     # what pending(1000) started with
            raise AssertionError("the live picture must not list the callbacks")

    async def campaigns() -> list[dict[str, Any]]:
        return []
    callbacks = CallbackStore(Redis(), Keys("ivr"))  # type: ignore[arg-type]
    none: Any = None
    view = LiveView(none, none, none, none, none, none, CallbackQueries(callbacks), SimpleNamespace(list=campaigns),
                    "n1")
    view.picture = lambda: {"queues": {}}  # type: ignore[method-assign]   # the state's part: not under test
    assert (await view.snapshot())["callbacks_pending"] == 1234
