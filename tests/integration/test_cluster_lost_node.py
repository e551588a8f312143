"""A lost node's waiting callers become callbacks at their places, against a real Redis: two nodes' registers,
node b stops beating, the leader's sweep moves b's callers into the callback line in join-time order, exactly
once across concurrent sweeps, and an old leader's sweep is refused by the fence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from ivr.app.config_load import from_mapping
from ivr.app.controller import Controller
from ivr.cluster.leader import Leadership
from ivr.cluster.lost import LostNodeSweep
from ivr.cluster.nodes import NodeHeartbeats
from ivr.cluster.waiting import WaitingRegister
from ivr.store.cluster_nodes import Waiter
from ivr.store.leader import Fenced
from ivr.store.redis_store import Store

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Lead:
    """A leadership as seen by the sweep: this holder string, leading (or believing it does)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder

    @property
    def is_leader(self) -> bool:
        return True


def _join(uid: str, queue: str, number: str, lang: str = "en") -> dict[str, str]:
    return {"Event": "QueueCallerJoin", "Uniqueid": uid, "Queue": queue, "CallerIDNum": number, "Language": lang}


async def _two_nodes(store: Store, clock: Clock) -> tuple[NodeHeartbeats, NodeHeartbeats, WaitingRegister,
                                                          WaitingRegister, Callable[[], Any]]:
    beats_a = NodeHeartbeats(store.cluster, "a", api="http://a", every=1.0, ttl=5.0, ami_connected=lambda: True,
                             clock=clock)
    beats_b = NodeHeartbeats(store.cluster, "b", api="http://b", every=1.0, ttl=5.0, ami_connected=lambda: True,
                             clock=clock)
    await beats_a.beat()
    await beats_b.beat()
    await beats_a.beat()     # a sees b
    reg_a = WaitingRegister(store.cluster, "a", place_of=lambda uid: None, others=beats_a.others_alive,
                            clock=clock, linger=0.0)
    reg_b = WaitingRegister(store.cluster, "b", place_of={"b3": T0 - 300.0}.get, others=beats_b.others_alive,
                            clock=clock, linger=0.0)
    await reg_a.start()
    await reg_b.start()

    async def stop() -> None:
        await reg_a.stop()
        await reg_b.stop()
    return beats_a, beats_b, reg_a, reg_b, stop


async def _fill(reg_a: WaitingRegister, reg_b: WaitingRegister, clock: Clock) -> None:
    """a: two callers; b: five, joined in the order b1 (oldest) ... b5, except b3 who returned with a place
    kept from 300 s before, and b4 withheld their number."""
    reg_a.on_event(_join("a1", "support", "447700900101"))
    for i, (uid, number, lang) in enumerate([("b1", "447700900001", "fa"), ("b2", "447700900002", "en"),
                                             ("b3", "447700900003", "zh"), ("b4", "anonymous", "en"),
                                             ("b5", "+447700900005", "en")]):
        clock.t = T0 + 10 * (i + 1)
        reg_b.on_event(_join(uid, "refunds" if uid == "b2" else "support", number, lang))
    reg_a.on_event(_join("a2", "support", "447700900102"))
    await reg_a.flush()
    await reg_b.flush()


async def test_the_register_and_heartbeats_in_redis(store: Store) -> None:
    clock = Clock()
    beats_a, _, reg_a, reg_b, stop = await _two_nodes(store, clock)
    try:
        await _fill(reg_a, reg_b, clock)
        assert await store.cluster.waiting("b") == [("b3", T0 - 300.0), ("b1", T0 + 10), ("b2", T0 + 20),
                                                    ("b4", T0 + 40), ("b5", T0 + 50)]
        assert [u for u, _ in await store.cluster.waiting("a")] == ["a1", "a2"]
        assert await store.cluster.oldest_in_queue(["a", "b"], "support") == [("a", "a1", T0),
                                                                             ("b", "b3", T0 - 300.0)]
        # a caller who leaves is gone from the register; a resync rebuilds it and keeps what only the join knew
        reg_b.on_event({"Event": "QueueCallerLeave", "Uniqueid": "b5", "Queue": "support"})
        await reg_b.flush()
        assert [u for u, _ in await store.cluster.waiting("b")] == ["b3", "b1", "b2", "b4"]
        reg_b.resync([("b1", "support", T0 + 10, "447700900001"), ("b9", "support", T0 + 60, "447700900009")])
        await reg_b.flush()
        assert await store.cluster.waiting("b") == [("b1", T0 + 10), ("b9", T0 + 60)]
        assert await store.cluster.oldest_in_queue(["b"], "refunds") == []
        moved = await store.cluster.move_to_callbacks("", "b", ["b1"], T0 + 100)   # solo: no fence to pass
        assert (moved[0].what, moved[0].lang, moved[0].number) == ("moved", "fa", "447700900001")
        # the heartbeats as /health shows them
        clock.t += 6
        await beats_a.beat()
        assert beats_a.dead() == ["b"] and beats_a.alive() == ["a"]
        raw = json.loads((await store.cluster.nodes())["a"])
        assert raw["api"] == "http://a" and raw["at"] == pytest.approx(clock.t)
    finally:
        await stop()


async def test_the_leader_makes_callbacks_of_a_lost_nodes_callers_in_join_order_once(store: Store, redis_url: str) -> None:
    clock = Clock()
    _, _, reg_a, reg_b, stop = await _two_nodes(store, clock)
    try:
        await _fill(reg_a, reg_b, clock)
    finally:
        await stop()
    lead = Leadership("a", store.leader, ttl=30.0, renew=1.0)
    assert await lead.step() and lead.holder
    beats_a = NodeHeartbeats(store.cluster, "a", api="http://a", every=1.0, ttl=5.0, ami_connected=lambda: True,
                             clock=clock)
    clock.t = T0 + 60       # b's last beat was at T0: 60 s ago; a beats now
    await beats_a.beat()
    made: list[str] = []
    anonymous: list[str] = []
    other = Store.from_url(redis_url, "t")     # a second client: its own connections, as another node has
    sweeps = [LostNodeSweep(s, lead, "a", ttl=5.0, every=1.0, clock=clock, batch=2,
                            on_callback=lambda m, node: made.append(m.uid),
                            on_anonymous=lambda uid, node: anonymous.append(uid))
              for s in (store.cluster, other.cluster)]
    try:
        # two sweeps at once (a repeated pass, a second leader that still believes it leads): each caller once
        await asyncio.gather(*(s.sweep() for s in sweeps))
    finally:
        await other.close()
    assert sorted(made) == ["b1", "b2", "b3", "b5"] and anonymous == ["b4"]
    pending = await store.callbacks.pending(50)
    assert [(p["call_uid"], p["number"], p["queue"], p["lang"]) for p in pending] == [
        ("b3", "447700900003", "support", "zh"),     # their place dates from their first call, 300 s before
        ("b1", "447700900001", "support", "fa"),
        ("b2", "447700900002", "refunds", "en"),
        ("b5", "447700900005", "support", "en")]
    assert [float(p["place"]) for p in pending] == [T0 - 300, T0 + 10, T0 + 20, T0 + 50]
    assert all(p["status"] == "pending" and p["source"] == "node_lost" and p["node"] == "b" for p in pending)
    assert [int(p["id"]) for p in pending] == sorted(int(p["id"]) for p in pending)   # ids in join order too
    assert await store.callbacks.pending_count() == 4
    assert await store.cluster.waiting("b") == []
    assert [u for u, _ in await store.cluster.waiting("a")] == ["a1", "a2"]      # the live node is untouched
    assert await store.cluster.moved("b1") == pending[1]["id"]
    # the node comes back and registers a moved caller again (its controller restarted; Asterisk kept them):
    # a second loss moves nobody twice
    await store.cluster.register("b", [Waiter("b1", "support", T0 + 10, "447700900001", "fa")], [])
    done = await sweeps[0].sweep()
    assert [(d.node, len(d.moved), d.before) for d in done] == [("b", 0, 1)]
    assert await store.callbacks.pending_count() == 4 and await store.cluster.waiting("b") == []
    # the callbacks are claimed by the dispatcher as any other, oldest place first
    claimed = await store.callbacks.claim(pending[0]["id"], node="a")
    assert claimed is not None and claimed["number"] == "447700900003"
    await lead.resign()


async def test_an_old_leaders_sweep_is_fenced_and_moves_nothing(store: Store) -> None:
    clock = Clock()
    _, _, reg_a, reg_b, stop = await _two_nodes(store, clock)
    try:
        await _fill(reg_a, reg_b, clock)
    finally:
        await stop()
    granted, old_holder = await store.leader.acquire("a", 60_000)
    assert granted
    assert await store.leader.release(old_holder)       # a's lease ends (a paused past it) ...
    granted, new_holder = await store.leader.acquire("c", 60_000)   # ... and c leads now
    assert granted and new_holder != old_holder
    clock.t = T0 + 60
    await store.cluster.heartbeat("a", {"at": clock.t})   # a beats on (only b is lost)
    old = LostNodeSweep(store.cluster, Lead(old_holder), "a", ttl=5.0, every=1.0, clock=clock)
    with pytest.raises(Fenced):
        await old.sweep()
    assert await store.callbacks.pending_count() == 0
    assert len(await store.cluster.waiting("b")) == 5
    new = LostNodeSweep(store.cluster, Lead(new_holder), "c", ttl=5.0, every=1.0, clock=clock)
    (done,) = await new.sweep()
    assert done.node == "b" and len(done.moved) == 4 and await store.callbacks.pending_count() == 4


async def test_answers_measured_against_the_other_nodes(store: Store) -> None:
    clock = Clock()
    beats_a, beats_b, reg_a, reg_b, stop = await _two_nodes(store, clock)
    try:
        await _fill(reg_a, reg_b, clock)
        for beats in (beats_a, beats_b, beats_a):     # both alive now
            await beats.beat()
        # a2 (joined T0 + 50) answered on a while b3 (place T0 - 300) waits in support on b: 350 s out of order
        reg_a.on_event({"Event": "QueueCallerLeave", "Uniqueid": "a2", "Queue": "support"})
        reg_a.on_event({"Event": "AgentConnect", "Uniqueid": "a2", "Queue": "support", "Interface": "PJSIP/2001"})
        # b2 answered on b: nobody waits in refunds on a
        reg_b.on_event({"Event": "AgentConnect", "Uniqueid": "b2", "Queue": "refunds", "Interface": "PJSIP/2002"})
        for reg in (reg_a, reg_b):
            await reg.flush()
        await asyncio.sleep(0.05)
        assert reg_a.order.as_dict() == {"answered": 1, "out_of_order": 1, "mean_s": 350.0, "worst_s": 350.0}
        assert reg_b.order.as_dict() == {"answered": 1, "out_of_order": 0, "mean_s": 0.0, "worst_s": 0.0}
    finally:
        await stop()


async def test_the_controller_wires_place_keeping_only_in_a_cluster(store: Store) -> None:
    solo = Controller(from_mapping({"node": "a", "queues": [{"name": "support"}]}), store)
    assert solo.waiting is None and solo.heartbeats is None and solo.lost_sweep is None
    assert not solo.leadership.clustered and "cluster" not in await solo.system.health()
    cfg = from_mapping({"node": "a", "cluster": {"enabled": True}, "queues": [{"name": "support"}]})
    c = Controller(cfg, store)
    assert c.waiting is not None and c.heartbeats is not None and c.leadership.clustered
    await c.heartbeats.beat()
    await c.waiting.start()
    try:
        c._on_ami_event(_join("1800000000.1", "support", "447700900001", "fa"))
        await c.waiting.flush()
        assert await store.cluster.waiting("a") != []
        health = (await c.system.health())["cluster"]
        assert [n["node"] for n in health["heartbeats"]["nodes"]] == ["a"]
        assert health["waiting"]["waiting"] == 1 and health["leadership"]["node"] == "a"
        assert "ivr_node_lost_callbacks_total" in c.metrics.render().decode()
    finally:
        await c.waiting.stop()



async def test_customers_we_called_keep_their_callback_place_and_their_own_number(store: Store) -> None:
    clock = Clock(T0 + 100)
    earlier = await store.callbacks.request("447700900042", queue="support", lang="fa", joined_at=T0 - 900)
    assert await store.callbacks.claim(earlier["id"], node="b") is not None
    await store.callbacks.finish(earlier["id"], "answered")     # dialled, answered, now waiting in the queue
    await store.redis.hset(store.keys.campaign_contact("notice-1", 17), mapping={"number": "+447700900017"})
    reg_b = WaitingRegister(store.cluster, "b", place_of=lambda uid: None, others=lambda: [], clock=clock,
                            linger=0.0)
    await store.cluster.heartbeat("b", {"at": T0})
    await reg_b.start()
    try:
        reg_b.on_event({**_join("b1", "support", "447700900042", "fa"), "AccountCode": f"cb:{earlier['id']}"})
        reg_b.on_event({**_join("b2", "support", "5550100"), "AccountCode": "c:notice-1:17:1"})
        reg_b.on_event({**_join("b3", "support", "5550100"), "AccountCode": "c:notice-1:99:1"})
        await reg_b.flush()
        # an AMI resync rebuilds the register from QueueStatus (no account codes, whole seconds of wait):
        # what the joins resolved (the callback's place, the contact's number) stays
        reg_b.resync([(uid, "support", T0 + 99, "447700900042" if uid == "b1" else "5550100")
                      for uid in ("b1", "b2", "b3")])
        await reg_b.flush()
    finally:
        await reg_b.stop()
    await store.cluster.heartbeat("a", {"at": clock.t})
    lead = Lead("")   # a single leader without a lease (solo): the fence lets it through
    made: list[str] = []
    sweep = LostNodeSweep(store.cluster, lead, "a", ttl=5.0, every=1.0, clock=clock,
                          on_callback=lambda m, node: made.append(m.uid))
    (done,) = await sweep.sweep()
    assert made == ["b1", "b2"] and done.anonymous == ["b3"]    # b3's contact is unknown: never our own number
    pending = await store.callbacks.pending(10)
    assert [(p["call_uid"], p["number"], float(p["place"])) for p in pending] == [
        ("b1", "447700900042", T0 - 900), ("b2", "447700900017", T0 + 100)]
