"""The balancing loop in a cluster: a follower keeps its own Asterisk's queue members in line but dispatches
callbacks and paces campaigns only once it leads; the leader publishes its
overflow tiers fenced by its lease, followers take them, and a leader whose write is fenced stops acting."""

from __future__ import annotations

import asyncio
from typing import Any

from ivr.agents.roster import Roster
from ivr.app.config_load import from_mapping
from ivr.asterisk.state import CallCenterState

from .fakes import FakeAmi
from ivr.balance.loop import BalanceLoop, tiers_from_json, tiers_to_json
from ivr.balance.policy import TierState
from ivr.cluster.leader import Leadership
from ivr.store.leader import Fenced




class Switch:
    """A leadership whose answer the test sets (the election itself: test_leadership.py)."""

    def __init__(self, leading: bool) -> None:
        self.is_leader = leading
        self.clustered = True


def test_a_follower_keeps_its_members_but_dispatches_only_once_it_leads() -> None:
    cfg = from_mapping({"agents": [{"id": "1001", "queues": ["support"], "logged_in": True}]}, {})
    ami = FakeAmi()
    switch = Switch(False)
    asked: list[str] = []

    async def pending() -> list[dict[str, Any]]:
        asked.append("callbacks")
        return []

    loop = BalanceLoop(cfg, CallCenterState(), ami, Roster(cfg, store=None), pending_callbacks=pending,  # type: ignore[arg-type]
                       leadership=switch)  # type: ignore[arg-type]
    decision = asyncio.run(loop.tick())
    # its own Asterisk gets the agent as a queue member; no callback is dispatched
    assert [(n, f["Interface"]) for n, f in ami.actions] == [("QueueAdd", "PJSIP/1001")] and asked == []
    assert decision is not None and [a.kind for a in decision.actions] == ["add_member"]
    assert loop.follower_ticks == 1 and "support" in loop.tiers
    switch.is_leader = True
    asyncio.run(loop.tick())                                    # its first tick as leader asks for callbacks
    assert asked == ["callbacks"] and len(ami.actions) == 1     # the add in flight is not sent twice


def test_the_solo_leadership_is_the_default() -> None:
    cfg = from_mapping({}, {})
    loop = BalanceLoop(cfg, CallCenterState(), FakeAmi(), Roster(cfg, store=None))  # type: ignore[arg-type]
    assert isinstance(loop.leadership, Leadership) and loop.leadership.is_leader




class Shared:
    """The published tiers in memory; ``fence_ok`` False: every write is refused as the lease's Lua does."""

    def __init__(self) -> None:
        self.raw = ""
        self.writes: list[tuple[str, str]] = []
        self.fence_ok = True

    async def publish_tiers(self, holder: str, tiers_json: str, node: str) -> None:
        if not self.fence_ok:
            raise Fenced("FENCED lease is 9:b")
        self.writes.append((holder, node))
        self.raw = tiers_json

    async def tiers(self) -> str:
        return self.raw


class Clustered(Switch):
    def __init__(self, leading: bool, node: str) -> None:
        super().__init__(leading)
        self.node = node

    def fence(self) -> str:
        return f"1:{self.node}"


def loop_on(leadership: Any, shared: Shared) -> tuple[BalanceLoop, FakeAmi]:
    cfg = from_mapping({"agents": [{"id": "1001", "queues": ["support"], "logged_in": True},
                                   {"id": "2001", "queues": ["support"], "logged_in": True, "tier": "volunteer"}]},
                       {})
    ami = FakeAmi()
    return BalanceLoop(cfg, CallCenterState(), ami, Roster(cfg, store=None), leadership=leadership,  # type: ignore[arg-type]
                       shared=shared), ami


def test_the_leader_publishes_its_tiers_and_a_follower_takes_them() -> None:
    shared = Shared()
    leader, _ = loop_on(Clustered(True, "a"), shared)
    asyncio.run(leader.tick())
    assert shared.writes == [("1:a", "a")] and tiers_from_json(shared.raw) == leader.tiers
    asyncio.run(leader.tick())
    assert len(shared.writes) == 1                               # unchanged tiers: not written again
    shared.raw = tiers_to_json({"support": TierState(True, 123.0)})   # the leader opened overflow
    follower, ami = loop_on(Clustered(False, "b"), shared)
    asyncio.run(follower.tick())
    assert follower.tiers["support"] == TierState(True, 123.0)
    # with the leader's overflow open, the follower's own Asterisk gets the volunteer too (its own view of
    # its quiet queue would have kept the tier closed)
    assert sorted(f["Interface"] for n, f in ami.actions if n == "QueueAdd") == ["PJSIP/1001", "PJSIP/2001"]


def test_a_leader_whose_tier_write_is_fenced_stops_acting_for_the_tick() -> None:
    shared = Shared()
    shared.fence_ok = False
    asked: list[str] = []
    leader, ami = loop_on(Clustered(True, "a"), shared)

    async def pending() -> list[dict[str, Any]]:
        asked.append("callbacks")
        return []

    leader._pending_callbacks = pending
    asyncio.run(leader.tick())
    assert asked == []                                           # no callback dispatched after the refusal


def test_damaged_published_tiers_are_ignored() -> None:
    assert tiers_from_json("") == {} and tiers_from_json("{not json") == {}
    assert tiers_from_json('{"support": {"open": true}}') == {}
