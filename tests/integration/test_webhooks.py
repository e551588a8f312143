"""Webhooks against a real Redis and a real receiver (an aiohttp server on 127.0.0.1 started by the test):
signatures verify, a 500 is retried until a 2xx, N failures dead-letter the event (and the next one goes on),
a receiver that is down gets everything in order when it is back, and a sender SIGKILLed mid-delivery loses
nothing: after a restart every event arrives at least once, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ivr.store.redis_store import Store
from ivr.webhooks import core
from ivr.webhooks.desk import WebhookDesk
from ivr.webhooks.events import Events
from ivr.webhooks.sender import Hook, WebhookSender

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-0123456789"


class Receiver:
    """A webhook receiver on 127.0.0.1: records the events whose signature verifies; ``answer`` decides the
    status of each request (by the event and how many times it came)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []          # verified, in arrival order (repeats included)
        self.bad_signatures = 0
        self.tries: dict[str, int] = {}
        self.answer: Callable[[dict[str, Any], int], Any] = lambda event, n: 200
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not core.verify(SECRET, request.headers.get(core.SIGNATURE_HEADER, ""), body):
            self.bad_signatures += 1
            return web.Response(status=401)
        event = json.loads(body)
        assert request.headers["X-Ivr-Event"] == event["type"] and request.headers["X-Ivr-Event-Id"] == event["id"]
        n = self.tries[event["id"]] = self.tries.get(event["id"], 0) + 1
        status = self.answer(event, n)
        if asyncio.iscoroutine(status):
            status = await status
        if 200 <= status < 300:
            self.events.append(event)
        return web.Response(status=status)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def seqs(self) -> list[int]:
        return [int(e["data"]["seq"]) for e in self.events]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def hook(url: str, events: tuple[str, ...] = ("refund.requested", "call.finished"), max_attempts: int = 5,
         name: str = "crm") -> Hook:
    return Hook(name, url, frozenset(events), SECRET, max_attempts=max_attempts, timeout=2.0, backoff_base=0.05,
                backoff_cap=0.2)


async def publish(store: Store, types: list[str], start: int = 0) -> None:
    ev = Events(store.webhooks, set(core.EVENT_TYPES))
    ev.start()
    for i, t in enumerate(types, start):
        ev.publish(t, {"seq": i})
    await ev.flush()
    await ev.stop()


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def test_signed_deliveries_in_order_only_subscribed_types(redis_url: str, receiver: Receiver) -> None:
    store = Store.from_url(redis_url, "w")
    delivered: list[tuple[str, str]] = []
    sender = WebhookSender(store.webhooks, [hook(receiver.url)], "n1",
                           on_delivery=lambda name, r: delivered.append((name, r)))
    try:
        await publish(store, ["refund.requested"])         # before the webhook existed: not its history
        await sender.start()
        await publish(store, ["refund.requested"])         # after its start, before its task read anything
        await publish(store, ["call.finished", "feedback.recorded", "refund.requested", "call.finished"], 1)
        await until(lambda: len(receiver.events) == 4)
        assert receiver.seqs() == [0, 1, 3, 4]              # feedback.recorded: not subscribed, skipped
        assert receiver.bad_signatures == 0
        assert [e["type"] for e in receiver.events] == ["refund.requested", "call.finished", "refund.requested",
                                                        "call.finished"]
        assert all(set(e) == {"id", "type", "created", "data"} for e in receiver.events)
        assert delivered == [("crm", "delivered")] * 4
        backlog = await store.webhooks.backlog("crm")
        assert backlog == {"pending": 0, "lag": 0}
    finally:
        await sender.stop()
        await store.close()


async def test_a_500_is_retried_with_backoff_then_succeeds(redis_url: str, receiver: Receiver) -> None:
    receiver.answer = lambda event, n: 500 if n <= 2 else 204
    store = Store.from_url(redis_url, "w")
    results: list[str] = []
    sender = WebhookSender(store.webhooks, [hook(receiver.url)], "n1", on_delivery=lambda name, r: results.append(r))
    try:
        await sender.start()
        await publish(store, ["refund.requested", "refund.requested"])
        await until(lambda: len(receiver.events) == 2)
        await until(lambda: len(results) == 6)     # the sender counts a delivery once the receiver has answered
        assert receiver.seqs() == [0, 1]
        assert list(receiver.tries.values()) == [3, 3]
        assert results == ["failed", "failed", "delivered"] * 2
        desk = WebhookDesk(store.webhooks, sender.hooks)
        view = (await desk.deliveries())["webhooks"][0]
        assert [(t["attempt"], t["status"]) for t in view["recent"]] == [(3, 204), (2, 500), (1, 500)] * 2
        assert view["dead_total"] == 0 and view["pending"] == 0
    finally:
        await sender.stop()
        await store.close()


async def test_dead_letter_after_max_attempts_then_the_next_event_goes_on(redis_url: str,
                                                                         receiver: Receiver) -> None:
    receiver.answer = lambda event, n: 500 if event["data"]["seq"] == 0 else 200
    store = Store.from_url(redis_url, "w")
    results: list[str] = []
    sender = WebhookSender(store.webhooks, [hook(receiver.url, max_attempts=3)], "n1",
                           on_delivery=lambda name, r: results.append(r))
    try:
        await sender.start()
        await publish(store, ["refund.requested", "call.finished"])
        await until(lambda: len(receiver.events) == 1)
        await until(lambda: len(results) == 4)     # the sender counts a delivery once the receiver has answered
        assert receiver.seqs() == [1]
        assert results == ["failed", "failed", "dead", "delivered"]
        view = (await WebhookDesk(store.webhooks, sender.hooks).deliveries("crm"))["webhooks"][0]
        assert view["dead_total"] == 1
        dead = view["dead"][0]
        assert dead["attempts"] == 3 and dead["error"] == "HTTP 500" and dead["event"]["data"] == {"seq": 0}
        assert (await store.webhooks.backlog("crm"))["pending"] == 0       # acknowledged: not sent again
    finally:
        await sender.stop()
        await store.close()


async def test_a_receiver_down_for_a_while_gets_everything_in_order(redis_url: str) -> None:
    receiver = Receiver()
    await receiver.start()
    port = receiver.port
    await receiver.stop()                                  # down: connection refused
    store = Store.from_url(redis_url, "w")
    sender = WebhookSender(store.webhooks, [hook(f"http://127.0.0.1:{port}/hook", max_attempts=100)], "n1")
    try:
        await sender.start()
        await publish(store, ["call.finished"] * 6)
        await asyncio.sleep(1.0)                           # several refused tries of the first
        recent = await store.webhooks.recent("crm")
        assert recent and all(t["status"] == 0 and t["stream_id"] == recent[-1]["stream_id"] for t in recent)
        await receiver.start(port)                         # back
        await until(lambda: len(receiver.events) == 6)
        assert receiver.seqs() == [0, 1, 2, 3, 4, 5]
    finally:
        await sender.stop()
        await receiver.stop()
        await store.close()


async def test_one_node_delivers_a_webhook_at_a_time(redis_url: str, receiver: Receiver) -> None:
    in_flight = 0
    most = 0

    async def slow(event: dict[str, Any], n: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return 200

    receiver.answer = slow
    s1, s2 = Store.from_url(redis_url, "w"), Store.from_url(redis_url, "w")
    a = WebhookSender(s1.webhooks, [hook(receiver.url)], "n1")
    b = WebhookSender(s2.webhooks, [hook(receiver.url)], "n2")
    try:
        await a.start()
        await b.start()
        await publish(s1, ["call.finished"] * 10)
        await until(lambda: len(receiver.events) == 10)
        assert receiver.seqs() == list(range(10)) and most == 1
    finally:
        await a.stop()
        await b.stop()
        await s1.close()
        await s2.close()


SENDER_SCRIPT = """
import asyncio, sys
from ivr.store.redis_store import Store
from ivr.webhooks.sender import Hook, WebhookSender

async def main() -> None:
    store = Store.from_url(sys.argv[1], "w")
    hook = Hook("crm", sys.argv[2], frozenset({"call.finished"}), sys.argv[3], max_attempts=100, timeout=30,
                backoff_base=0.05, backoff_cap=0.2)
    sender = WebhookSender(store.webhooks, [hook], "node1")
    await sender.start()
    print("started", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_nothing_is_lost_across_a_sigkill_mid_delivery(redis_url: str, receiver: Receiver) -> None:
    """The sender process is SIGKILLed while the receiver holds event 3 (taken, not answered); restarted, it
    delivers 3 again and everything after it: every event at least once, in order."""
    hold = asyncio.Event()
    killed = asyncio.Event()

    async def answer(event: dict[str, Any], n: int) -> int:
        if event["data"]["seq"] == 3 and not killed.is_set():
            hold.set()
            await killed.wait()                            # the sender dies while waiting for this answer
            return 503                                     # (nobody reads it)
        return 200

    receiver.answer = answer
    store = Store.from_url(redis_url, "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SENDER_SCRIPT, redis_url, receiver.url, SECRET], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    proc = spawn()
    try:
        assert proc.stdout is not None
        assert (await asyncio.to_thread(proc.stdout.readline)).strip() == b"started"   # its group exists
        await publish(store, ["call.finished"] * 10)
        await asyncio.wait_for(hold.wait(), 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed.set()
        assert receiver.seqs() == [0, 1, 2]                # 3 taken by the receiver, never acknowledged
        assert (await store.webhooks.backlog("crm"))["pending"] >= 1
        await publish(store, ["call.finished"] * 3, 10)      # published while no sender runs
        proc = spawn()
        await until(lambda: len(set(receiver.seqs())) == 13, 30)
        seqs = receiver.seqs()
        firsts = sorted(set(seqs), key=seqs.index)
        assert firsts == list(range(13))                    # every event, first arrivals in order
        assert seqs == list(range(13))                      # nothing overtook anything
        first_try = [e for e in receiver.events if e["data"]["seq"] == 3][0]
        assert receiver.tries[first_try["id"]] == 2         # the one in flight came again, with the same id
        await asyncio.sleep(0.3)
        assert (await store.webhooks.backlog("crm")) == {"pending": 0, "lag": 0}
    finally:
        proc.kill()
        proc.wait(timeout=10)
        await store.close()
