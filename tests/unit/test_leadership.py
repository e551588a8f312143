"""The election (ivr/cluster/leader.py) against a fake lease store and an injected clock: who leads, when a
leader steps down, what listeners hear, what a fenced write carries."""

from __future__ import annotations

import asyncio

import pytest

from ivr.cluster.leader import DRIFT, Leadership, NotLeader


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLease:
    """The lease's semantics (ivr/store/leader.py) in memory, on the same clock: a holder string with an expiry."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.holder = ""
        self.until = 0.0
        self.seq = 0
        self.down = False      # Redis unreachable: every call raises
        self.hang = False      # Redis hangs: every call waits for ever

    async def _io(self) -> None:
        if self.down:
            raise ConnectionError("Connection refused")
        if self.hang:
            await asyncio.Event().wait()

    def _live(self) -> str:
        return self.holder if self.clock() < self.until else ""

    async def acquire(self, node: str, ttl_ms: int) -> tuple[bool, str]:
        await self._io()
        if self._live():
            return False, self.holder
        self.seq += 1
        self.holder, self.until = f"{self.seq}:{node}", self.clock() + ttl_ms / 1000
        return True, self.holder

    async def renew(self, holder: str, ttl_ms: int) -> bool:
        await self._io()
        if self._live() != holder:
            return False
        self.until = self.clock() + ttl_ms / 1000
        return True

    async def release(self, holder: str) -> bool:
        await self._io()
        if self._live() == holder:
            self.holder, self.until = "", 0.0
            return True
        return False


def pair(ttl: float = 3.0) -> tuple[Clock, FakeLease, Leadership, Leadership, list[tuple[str, bool]]]:
    clock = Clock()
    lease = FakeLease(clock)
    heard: list[tuple[str, bool]] = []
    a = Leadership("a", lease, ttl, 1.0, clock=clock)
    b = Leadership("b", lease, ttl, 1.0, clock=clock)
    a.add_listener(lambda leading: heard.append(("a", leading)))
    b.add_listener(lambda leading: heard.append(("b", leading)))
    return clock, lease, a, b, heard


def test_solo_leads_for_good_with_an_unchecked_fence() -> None:
    solo = Leadership.solo("n1")
    assert solo.is_leader and solo.leader == "n1" and not solo.clustered
    assert asyncio.run(solo.step()) is True
    assert solo.fence() == "" and solo.token == 0
    assert solo.describe() == {"node": "n1", "leader": "n1", "leading": True, "token": 0, "clustered": False,
                               "changes": 0}


def test_exactly_one_of_two_leads_and_the_other_knows_who() -> None:
    _, _, a, b, heard = pair()
    assert asyncio.run(a.step()) is True
    assert asyncio.run(b.step()) is False
    assert a.is_leader and not b.is_leader
    assert b.leader == "a" and a.leader == "a"
    assert a.token == 1 and a.fence() == "1:a"
    assert heard == [("a", True)]
    with pytest.raises(NotLeader, match="node b does not lead .leader: a"):
        b.fence()


def test_a_renewing_leader_keeps_the_lease() -> None:
    clock, _, a, b, heard = pair()
    asyncio.run(a.step())
    for _ in range(10):
        clock.now += 1.0
        assert asyncio.run(a.step()) is True
        assert asyncio.run(b.step()) is False
    assert a.token == 1 and heard == [("a", True)]


def test_a_dead_leader_is_replaced_after_its_ttl_with_a_larger_token() -> None:
    clock, _, a, b, heard = pair(ttl=3.0)
    asyncio.run(a.step())
    clock.now += 2.9                                # a stops renewing (dead): its lease still runs in Redis
    assert asyncio.run(b.step()) is False
    clock.now += 0.2                                # 3.1 s after a's last renewal: the lease ran out
    assert asyncio.run(b.step()) is True
    assert b.token == 2 and b.token > 1
    assert heard == [("a", True), ("b", True)]


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_runs_out_in_redis() -> None:
    clock, lease, a, _, heard = pair(ttl=3.0)
    asyncio.run(a.step())
    lease.down = True
    clock.now += 1.0
    assert asyncio.run(a.step()) is True             # Redis away a moment: leads on, on the local lease
    assert a.errors == 1
    clock.now += 3.0 * DRIFT - 1.0                   # 90 % of the TTL since the last renewal was *sent*
    assert not a.is_leader                           # it no longer counts on it (before Redis lets it go)
    assert asyncio.run(a.step()) is False
    assert heard == [("a", True), ("a", False)]
    with pytest.raises(NotLeader):
        a.fence()


def test_a_leader_whose_lease_was_taken_learns_it_at_its_next_renewal() -> None:
    clock, lease, a, b, heard = pair(ttl=3.0)
    asyncio.run(a.step())
    clock.now += 3.5                                 # a was paused past its lease (a long GC, a stopped VM)
    assert asyncio.run(b.step()) is True
    assert a.holder == "1:a"                         # a does not know yet ...
    assert not a.is_leader                           # ... but its local lease ran out, so it does not act
    assert asyncio.run(a.step()) is False            # the renewal is refused: it steps down, b stays
    assert a.holder == "" and a.leader == "b" and b.is_leader
    assert heard == [("a", True), ("b", True), ("a", False)]


def test_resign_hands_over_at_once() -> None:
    _, _, a, b, heard = pair()
    asyncio.run(a.step())
    asyncio.run(a.resign())
    assert not a.is_leader and a.holder == ""
    assert asyncio.run(b.step()) is True
    assert heard == [("a", True), ("a", False), ("b", True)]
    assert a.changes == 2 and b.changes == 1


def test_a_failing_listener_does_not_stop_the_others() -> None:
    _, _, a, _, heard = pair()

    def broken(_leading: bool) -> None:
        raise RuntimeError("boom")

    a._listeners.insert(0, broken)
    asyncio.run(a.step())
    assert heard == [("a", True)]


def test_run_steps_down_when_redis_hangs_and_cancelling_without_release_keeps_the_lease() -> None:
    async def scenario() -> None:
        lease = FakeLease(Clock())
        a = Leadership("a", lease, ttl=0.3, renew=0.05)   # the real clock: run() sleeps for real
        lease.clock = a.clock                              # type: ignore[assignment]
        task = asyncio.create_task(a.run(release=False))
        await asyncio.sleep(0.12)
        assert a.is_leader
        lease.hang = True                                  # every renewal now times out after `renew`
        await asyncio.sleep(0.45)
        assert not a.is_leader and a.holder == ""          # stepped down within its lease, though Redis hung
        lease.hang = False
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert lease.holder                                # not released: it runs out by itself, as on a crash

    asyncio.run(scenario())


def test_run_releases_the_lease_when_cancelled() -> None:
    async def scenario() -> None:
        lease = FakeLease(Clock())
        a = Leadership("a", lease, ttl=0.3, renew=0.05)
        lease.clock = a.clock                              # type: ignore[assignment]
        task = asyncio.create_task(a.run())
        await asyncio.sleep(0.1)
        assert a.is_leader
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert lease.holder == "" and not a.is_leader

    asyncio.run(scenario())


def test_health_and_metrics_follow_the_leadership() -> None:
    from ivr.app.metrics import Metrics
    from ivr.app.system import cluster_view

    _, _, a, b, _ = pair()
    metrics = Metrics()
    metrics.bind_node("a")
    a.add_listener(metrics.leader_changed)
    metrics.leader_changed(a.is_leader)                 # as the controller does at its start
    assert cluster_view(a) == {"node": "a", "leader": "", "leading": False, "token": 0}
    asyncio.run(a.step())
    asyncio.run(b.step())
    assert cluster_view(a) == {"node": "a", "leader": "a", "leading": True, "token": 1}
    assert cluster_view(b) == {"node": "b", "leader": "a", "leading": False, "token": 0}
    asyncio.run(a.resign())
    text = metrics.render().decode()
    assert 'ivr_leader{node="a"} 0.0' in text
    assert "ivr_leader_changes_total 2.0" in text       # started leading, stopped: the start itself not counted


async def test_a_leader_that_cannot_act_gives_the_lease_to_one_that_can() -> None:
    """A leader whose Asterisk is gone (``eligible`` false) resigns at its next step; the other node takes the
    lease at its own next step, and the first does not take it back until it may lead again."""
    clock = Clock()
    lease = FakeLease(clock)
    able = {"a": True, "b": True}
    a = Leadership("a", lease, 3.0, 1.0, clock=clock, eligible=lambda: able["a"])
    b = Leadership("b", lease, 3.0, 1.0, clock=clock, eligible=lambda: able["b"])
    assert await a.step() and not await b.step()
    able["a"] = False
    clock.now += 1.0
    assert not await a.step() and not a.is_leader and a.stepped_down == 1
    assert lease.holder == ""                      # given back at once, not left to run out
    assert await b.step() and b.is_leader
    clock.now += 5.0                               # b's lease runs out while b is paused: a still may not lead
    assert not await a.step() and lease.holder.endswith(":b")
    able["a"] = True
    assert await a.step() and a.is_leader and a.stepped_down == 1


async def test_a_node_without_asterisk_may_lead_only_alone() -> None:
    from ivr.cluster.nodes import NodeHeartbeats

    class Beats:
        def __init__(self) -> None:
            self.raw: dict[str, str] = {}

        async def heartbeat(self, node: str, info: dict[str, object]) -> dict[str, str]:
            import json

            self.raw[node] = json.dumps(info)
            return dict(self.raw)

    clock = Clock()
    store = Beats()
    up = {"a": True, "b": True}
    a = NodeHeartbeats(store, "a", api="", every=1.0, ttl=5.0, ami_connected=lambda: up["a"], clock=clock)
    b = NodeHeartbeats(store, "b", api="", every=1.0, ttl=5.0, ami_connected=lambda: up["b"], clock=clock)
    await a.beat()
    await b.beat()
    up["a"] = False
    for _ in range(5):
        await a.beat()
        await b.beat()
        clock.now += 1.0
    assert a.may_lead()                            # out of reach for 5 s: not yet lost
    clock.now += 1.0
    await a.beat()
    await b.beat()
    assert not a.may_lead() and b.may_lead()       # lost while b is alive with its Asterisk: b should lead
    up["b"] = False
    for _ in range(7):
        await b.beat()
        await a.beat()
        clock.now += 1.0
    assert a.may_lead() and b.may_lead()           # nobody can act: neither steps down (the sweep needs a leader)
