"""One logical queue across nodes, against a real Redis: two nodes' ClusterAgents services (a and b), each with
a fake AMI that answers QueuePause the way Asterisk does (a QueueMemberPause event back), share one Redis.
An agent connected on a is paused on b within a second and unpaused when the call ends; a supervisor's
pause on b is never undone; a dead node's entry is removed by the reconcile bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from ivr.asterisk.state import CallCenterState
from ivr.cluster.agents import ClusterAgents
from ivr.store.redis_store import Store

AGENTS = ("1001", "1002", "1003")
QUEUES = ("support", "rebooking")


class EchoAmi:
    """QueuePause applied to the node's live state and fed back as its QueueMemberPause event."""

    def __init__(self, state: CallCenterState) -> None:
        self.state = state
        self.connected = True
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.on_event: Callable[[dict[str, str]], None] = lambda e: None

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *,
                     timeout: float | None = None) -> Any:
        f = dict(fields or {})
        self.sent.append((time.monotonic(), f))
        self.event({"Event": "QueueMemberPause", "Queue": f["Queue"], "Interface": f["Interface"],
                    "Paused": "1" if f["Paused"] == "true" else "0", "PausedReason": f.get("Reason", "")})
        return {"Response": "Success", "Message": "Interface paused successfully"}

    def event(self, e: dict[str, str]) -> None:
        self.state.apply(e)
        self.on_event(e)


class Node:
    def __init__(self, name: str, store: Store, stale: float = 15.0, sync: float = 0.5) -> None:
        self.state = CallCenterState()
        for q in QUEUES:
            for a in AGENTS:
                self.state.apply({"Event": "QueueMemberAdded", "Queue": q, "Interface": f"PJSIP/{a}",
                                  "Paused": "0", "PausedReason": "", "Status": "1", "InCall": "0"})
        self.ami = EchoAmi(self.state)
        self.pauses = 0
        self.svc = ClusterAgents(name, store.cluster_agents, self.ami, self.state,
                                 lambda: ((a, (f"PJSIP/{a}",)) for a in AGENTS), sync=sync, stale=stale,
                                 on_pause=self._paused)
        self.ami.on_event = self.svc.on_event
        self.task: asyncio.Task[None] | None = None

    def _paused(self) -> None:
        self.pauses += 1

    def member(self, queue: str, agent: str) -> tuple[bool, str]:
        m = self.state.queues[queue].members[f"PJSIP/{agent}"]
        return m.paused, m.paused_reason

    def feed(self, e: dict[str, str]) -> None:
        self.ami.event(e)


def connect(uid: str, agent: str) -> dict[str, str]:
    return {"Event": "AgentConnect", "Queue": "support", "Uniqueid": uid, "Interface": f"PJSIP/{agent}",
            "DestUniqueid": f"{uid}-agent", "HoldTime": "3", "RingTime": "1"}


def complete(uid: str, agent: str) -> dict[str, str]:
    return {"Event": "AgentComplete", "Queue": "support", "Uniqueid": uid, "Interface": f"PJSIP/{agent}",
            "DestUniqueid": f"{uid}-agent", "HoldTime": "3", "TalkTime": "20", "Reason": "agent"}


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails naming ``what`` after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


@pytest.fixture
async def second_store(redis_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(redis_url, "t")
    try:
        yield s
    finally:
        await s.close()


async def start(*nodes: Node) -> None:
    for n in nodes:
        n.task = asyncio.create_task(n.svc.run())
    for n in nodes:
        await until(n.svc.subscribed.is_set, 5.0, "subscribed to the agent events")


async def stop(*nodes: Node) -> None:
    for n in nodes:
        if n.task is not None:
            n.task.cancel()
    await asyncio.gather(*(n.task for n in nodes if n.task is not None), return_exceptions=True)


async def test_an_agent_on_a_call_on_a_is_paused_on_b_at_once_and_unpaused_when_it_ends(
        store: Store, second_store: Store) -> None:
    a, b = Node("a", store), Node("b", second_store)
    await start(a, b)
    try:
        a.feed(connect("a-1.1", "1001"))
        took = await until(lambda: all(b.member(q, "1001") == (True, "busy@a") for q in QUEUES), 1.0,
                           "b pauses 1001 in every queue")
        assert b.pauses == 2 and b.svc.busy_elsewhere() == {"1001": "a"}
        assert all(a.member(q, "1001") == (False, "") for q in QUEUES)   # a's own app_queue knows its call
        assert all(not b.member(q, x)[0] for q in QUEUES for x in ("1002", "1003"))
        entries = await store.cluster_agents.all()
        assert (entries["1001"].node, entries["1001"].uid) == ("a", "a-1.1")
        a.feed(complete("a-1.1", "1001"))
        freed = await until(lambda: all(b.member(q, "1001") == (False, "") for q in QUEUES), 1.0,
                            "b unpauses 1001")
        assert await store.cluster_agents.all() == {}
        print(f"pause on b {took * 1000:.0f} ms after the AgentConnect on a; unpause {freed * 1000:.0f} ms after "
              "the AgentComplete")
        # the other way round, and a hangup of the caller instead of an AgentComplete
        b.feed(connect("b-2.1", "1002"))
        await until(lambda: all(a.member(q, "1002") == (True, "busy@b") for q in QUEUES), 1.0, "a pauses 1002")
        b.feed({"Event": "Hangup", "Uniqueid": "b-2.1", "Cause": "16"})
        await until(lambda: all(a.member(q, "1002") == (False, "") for q in QUEUES), 1.0, "a unpauses 1002")
    finally:
        await stop(a, b)


async def test_a_supervisor_pause_on_b_is_never_undone(store: Store, second_store: Store) -> None:
    a, b = Node("a", store), Node("b", second_store)
    await start(a, b)
    try:
        b.feed({"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
                "PausedReason": "lunch"})
        a.feed(connect("a-3.1", "1001"))
        await until(lambda: b.member("rebooking", "1001") == (True, "busy@a"), 1.0, "b pauses 1001 in rebooking")
        await asyncio.sleep(0.3)
        assert b.member("support", "1001") == (True, "lunch")
        a.feed(complete("a-3.1", "1001"))
        await until(lambda: b.member("rebooking", "1001") == (False, ""), 1.0, "b unpauses 1001 in rebooking")
        await asyncio.sleep(1.2)   # two reconciles
        assert b.member("support", "1001") == (True, "lunch")
        assert [f["Queue"] for _, f in b.ami.sent if f["Interface"] == "PJSIP/1001"] == ["rebooking", "rebooking"]
    finally:
        await stop(a, b)


async def test_a_dead_nodes_entry_is_removed_by_the_reconcile_bound(store: Store, second_store: Store) -> None:
    a, b = Node("a", store, stale=1.5), Node("b", second_store, stale=1.5)
    await start(a, b)
    try:
        t0 = time.monotonic()
        await store.cluster_agents.set_busy("1003", "c", "c-9.1")   # node c connects 1003, then dies
        await until(lambda: a.member("support", "1003") == (True, "busy@c")
                    and b.member("support", "1003") == (True, "busy@c"), 1.0, "a and b pause 1003")
        a.feed(connect("a-4.1", "1001"))
        await until(lambda: a.member("support", "1003") == (False, "")
                    and b.member("support", "1003") == (False, ""), 4.0, "1003 released after c's bound")
        held = time.monotonic() - t0
        assert 1.45 <= held <= 1.5 + 0.5 + 1.5, f"held {held:.2f} s: the bound is busy_stale + busy_sync (2 s)"
        assert sorted(await store.cluster_agents.all()) == ["1001"]   # a live node's entry is confirmed, kept
        assert a.svc.counters.swept + b.svc.counters.swept == 1
        assert b.member("support", "1001") == (True, "busy@a")
    finally:
        await stop(a, b)


async def test_a_node_whose_entries_were_lost_writes_them_again(store: Store, second_store: Store) -> None:
    a, b = Node("a", store), Node("b", second_store)
    await start(a, b)
    try:
        a.feed(connect("a-5.1", "1002"))
        await until(lambda: b.member("support", "1002") == (True, "busy@a"), 1.0, "b pauses 1002")
        await store.redis.flushdb()   # a Redis failover that lost the last writes
        t0 = time.monotonic()
        while "1002" not in await store.cluster_agents.all():
            assert time.monotonic() - t0 < 2.0, "a did not write its call again within 2 s"
            await asyncio.sleep(0.05)
        await until(lambda: b.member("support", "1002") == (True, "busy@a"), 2.0, "b holds 1002 again")
    finally:
        await stop(a, b)


async def test_a_dropped_subscription_costs_at_most_one_reconcile(store: Store, second_store: Store) -> None:
    a, b = Node("a", store), Node("b", second_store)
    await start(a, b)
    try:
        killed = await store.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 1, killed   # the subscriptions of a and b (one may be re-subscribing)
        a.feed(connect("a-6.1", "1003"))
        await until(lambda: all(b.member(q, "1003") == (True, "busy@a") for q in QUEUES), 1.5,
                    "b pauses 1003 though its subscription was dropped")
        await until(b.svc.subscribed.is_set, 5.0, "b subscribed again")
        a.feed(complete("a-6.1", "1003"))
        await until(lambda: all(b.member(q, "1003") == (False, "") for q in QUEUES), 1.5, "b unpauses 1003")
    finally:
        await stop(a, b)
