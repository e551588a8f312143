"""The pause-elsewhere mechanism against the real Asterisk: a node's ClusterAgents service (node "b") on its own
AMI connection to the test stack's Asterisk, the busy board on a scratch Redis. Another node ("a") is played by
writing its entries into the board. Proves what the fake AMIs of test_cluster_agents.py assume: QueuePause
with a Reason comes back as QueueMemberPause with that PausedReason, Asterisk's QueueStatus agrees, and a
supervisor's pause (through the API) is left alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ivr.asterisk.ami_client import AmiClient
from ivr.asterisk.state import CallCenterState
from ivr.cluster.agents import ClusterAgents
from ivr.store.redis_store import Store

from .harness import TestStack


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


async def test_real_asterisk_holds_an_agent_busy_elsewhere_and_leaves_a_supervisor_pause(
        stack: TestStack, store: Store) -> None:
    cfg = stack.stack.config()
    state = CallCenterState()
    holder: list[ClusterAgents] = []

    def on_event(e: Any) -> None:
        state.apply(e)
        for svc in holder:
            svc.on_event(e)

    async def on_connected(client: AmiClient) -> None:
        state.resync(await client.list_action("QueueStatus", timeout=20))
        for svc in holder:
            svc.resync()

    ami = AmiClient(cfg.asterisk.ami_host, cfg.asterisk.ami_port, cfg.asterisk.ami_username,
                    cfg.asterisk.ami_secret, on_event=on_event, on_connected=on_connected)
    svc = ClusterAgents("b", store.cluster_agents, ami, state,
                        lambda: ((a.id, a.interfaces) for a in cfg.agents), sync=0.5)
    holder.append(svc)
    await ami.start()
    task: asyncio.Task[None] | None = None
    busy, other = "", ""
    try:
        await asyncio.wait_for(ami.ready.wait(), 10)
        ids = {a.interface: a.id for a in cfg.agents}
        free = sorted({ids[m.interface] for q in state.queues.values() for m in q.members.values()
                       if m.interface in ids and not m.paused})
        assert len(free) >= 2, f"two unpaused agents in the stack's queues expected, got {free}"
        busy, other = free[0], free[1]

        def members(agent: str) -> list[tuple[bool, str]]:
            return [(m.paused, m.paused_reason) for q in state.queues.values() for m in q.members.values()
                    if m.interface == f"PJSIP/{agent}"]

        task = asyncio.create_task(svc.run())
        await until(svc.subscribed.is_set, 5, "subscribed")
        await asyncio.to_thread(stack.api.post, f"/api/v1/agents/{other}/pause", {"reason": "lunch"})
        await until(lambda: all(m == (True, "lunch") for m in members(other)), 5, "the supervisor's pause")
        await store.cluster_agents.set_busy(busy, "a", "a-1.1")
        await store.cluster_agents.set_busy(other, "a", "a-2.1")
        await until(lambda: all(m == (True, "busy@a") for m in members(busy)), 2, f"{busy} held for a's call")
        status = await ami.list_action("QueueStatus", timeout=20)
        told = {(e.get("Queue"), e.get("PausedReason")) for e in status
                if e.get("Event") == "QueueMember" and e.get("Location") == f"PJSIP/{busy}"}
        assert told and all(reason == "busy@a" for _, reason in told), told
        await asyncio.sleep(0.6)
        assert all(m == (True, "lunch") for m in members(other))
        await store.cluster_agents.set_free(busy, "a", "a-1.1")
        await store.cluster_agents.set_free(other, "a", "a-2.1")
        await until(lambda: all(m == (False, "") for m in members(busy)), 2, f"{busy} released")
        await asyncio.sleep(1.2)   # two reconciles: the supervisor's pause is still there
        assert all(m == (True, "lunch") for m in members(other))
        assert svc.counters.errors == 0 and svc.counters.pauses == len(members(busy))
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if other:
            await asyncio.to_thread(stack.api.post, f"/api/v1/agents/{other}/unpause")
        await ami.stop()
