"""The live balancing loop's tick against a fake AMI: queue membership is applied before anything is read
from Redis, so queues an Asterisk restart emptied get their agents back while Redis is down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ivr.store.errors import StoreUnavailable

from ivr.balance.loop import BalanceLoop
from ivr.app.config_load import from_mapping
from ivr.agents.roster import Roster
from ivr.asterisk.state import CallCenterState

from .fakes import FakeAmi




def loop_with(pending: Any) -> tuple[BalanceLoop, FakeAmi]:
    cfg = from_mapping({"agents": [{"id": "1001", "queues": ["support"], "logged_in": True},
                                   {"id": "1002", "queues": ["support"], "logged_in": False}]}, {})
    ami = FakeAmi()
    roster = Roster(cfg, store=None)  # type: ignore[arg-type]   # the roster in memory: no Redis read
    return BalanceLoop(cfg, CallCenterState(), ami, roster, pending_callbacks=pending), ami  # type: ignore[arg-type]


def test_members_are_added_even_when_redis_is_down() -> None:
    async def redis_down() -> list[dict[str, Any]]:
        raise StoreUnavailable("Connection refused")

    loop, ami = loop_with(redis_down)
    with pytest.raises(StoreUnavailable):
        asyncio.run(loop.tick())
    assert [(n, f["Queue"], f["Interface"]) for n, f in ami.actions] == [("QueueAdd", "support", "PJSIP/1001")]


def test_callbacks_are_dispatched_after_the_membership() -> None:
    order: list[str] = []

    async def pending() -> list[dict[str, Any]]:
        order.append(f"redis read after {len(ami.actions)} AMI action(s)")
        return []

    loop, ami = loop_with(pending)
    decision = asyncio.run(loop.tick())
    assert order == ["redis read after 1 AMI action(s)"]
    assert decision is not None and [a.kind for a in decision.actions] == ["add_member"]


def test_the_campaign_pace_is_set_once_a_tick_from_the_decision_that_sees_the_callbacks() -> None:
    """A callback whose promise runs out soon pauses the campaigns: the pace comes from the second decision
    (with the callbacks read from Redis), never first full from the one without them."""
    import time

    from ivr.balance.policy import CampaignView

    callbacks: list[dict[str, Any]] = []

    async def pending() -> list[dict[str, Any]]:
        return callbacks

    loop, ami = loop_with(pending)
    paces: list[tuple[str, float]] = []
    loop._campaigns = lambda: [CampaignView("flood", priority=1, cps=2.0)]
    loop._set_pace = lambda cid, pace, reason: paces.append((cid, pace))
    asyncio.run(loop.tick())
    assert paces == [("flood", 1.0)]
    callbacks.append({"id": "7", "queue": "support", "place": "1", "status": "pending", "due": str(time.time() + 60)})
    paces.clear()
    decision = asyncio.run(loop.tick())
    assert paces == [("flood", 0.0)]
    (act,) = [a for a in decision.actions if a.kind == "campaign_pace"] if decision else []
    assert "due within 900s" in act.reason


def test_a_member_held_for_a_call_on_another_node_is_busy_and_serving_not_paused() -> None:
    loop, _ = loop_with(None)
    for reason in ("busy@b", "lunch"):
        loop.state.apply({"Event": "QueueMemberAdded", "Queue": "support", "Interface": "PJSIP/1001",
                          "Paused": "1", "PausedReason": reason, "Status": "1", "InCall": "0"})
        snap = loop.snapshot(time.time())
        agent, queue = snap.agents["1001"], snap.queues["support"]
        held = reason == "busy@b"
        assert (agent.paused, agent.busy, queue.serving, queue.free) == (not held, held, int(held), 0)
