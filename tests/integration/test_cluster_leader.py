"""One balancing leader and the campaign work stream against a real Redis: the lease's Lua (grant, renew,
release, fencing), two elections on one Redis (exactly one leads; a killed leader is replaced within
lease_ttl + renew, measured), an old leader fenced off, and two consumers of one work stream where one dies
mid-way (every claim dialled exactly once, none lost)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from ivr.campaigns.work import CampaignWork
from ivr.cluster.leader import Leadership
from ivr.store.campaign_work import GROUP
from ivr.store.leader import Fenced
from ivr.store.redis_store import Store


# ------------------------------------------------------------------ the lease's Lua
async def test_grants_renewals_and_release_of_the_lease(store: Store) -> None:
    lease = store.leader
    assert await lease.current() == ""
    assert await lease.acquire("a", 3000) == (True, "1:a")
    assert await lease.acquire("b", 3000) == (False, "1:a")        # held: b is told who holds it
    assert await lease.renew("1:a", 3000) is True
    assert await lease.renew("1:b", 3000) is False
    assert 2000 < await store.redis.pttl(store.keys.leader) <= 3000
    assert await lease.release("9:a") is False                      # not that holder's: left alone
    assert await lease.release("1:a") is True and await lease.current() == ""
    assert await lease.acquire("b", 3000) == (True, "2:b")          # the token only grows


async def test_the_lease_runs_out_and_the_next_grant_has_a_larger_token(store: Store) -> None:
    assert (await store.leader.acquire("a", 200))[0]
    await asyncio.sleep(0.3)
    assert await store.leader.current() == ""
    assert await store.leader.renew("1:a", 200) is False             # too late: a renewal does not revive it
    assert await store.leader.acquire("b", 3000) == (True, "2:b")


async def test_fenced_writes_go_ahead_only_for_the_holder(store: Store) -> None:
    _, holder = await store.leader.acquire("a", 3000)
    key = "t:cluster:probe"
    await store.leader.hset_fenced(holder, key, {"open": "1", "by": "a"})
    assert await store.redis.hgetall(key) == {"open": "1", "by": "a"}
    with pytest.raises(Fenced, match="FENCED lease is 1:a"):
        await store.leader.hset_fenced("0:b", key, {"open": "0"})
    assert await store.redis.hget(key, "open") == "1"                # nothing written
    await store.leader.hset_fenced("", key, {"solo": "1"})           # a single node: unchecked
    assert await store.redis.hget(key, "solo") == "1"
    body = "return redis.call('INCRBY', KEYS[2], ARGV[2])"
    assert await store.leader.eval_fenced(body, holder, ["t:cluster:n"], [5]) == 5


async def test_a_fenced_callback_claim_is_refused_to_an_old_leader(store: Store) -> None:
    cb = await store.callbacks.request("15550001", queue="support")
    _, old = await store.leader.acquire("a", 100)
    await asyncio.sleep(0.15)
    _, new = await store.leader.acquire("b", 3000)
    with pytest.raises(Fenced):
        await store.callbacks.claim(cb["id"], node="a", fence=old)
    assert (await store.callbacks.get(cb["id"]) or {})["status"] == "pending"   # still in line
    rec = await store.callbacks.claim(cb["id"], node="b", fence=new)
    assert rec is not None and rec["lease_node"] == "b"


# ------------------------------------------------------------------ two elections on one Redis
async def test_exactly_one_of_two_leads_and_a_killed_leader_is_replaced_within_ttl_plus_renew(store: Store) -> None:
    ttl, renew = 3.0, 1.0
    a = Leadership("a", store.leader, ttl, renew)
    b = Leadership("b", store.leader, ttl, renew)
    tasks = {x.node: asyncio.create_task(x.run(release=False)) for x in (a, b)}
    try:
        both_seen = 0
        for _ in range(30):                                          # 3 s of samples: never two at once
            await asyncio.sleep(0.1)
            leaders = [x.node for x in (a, b) if x.is_leader]
            assert len(leaders) <= 1, leaders
            both_seen += len(leaders)
        assert both_seen >= 25                                       # and one leads nearly all the time
        first, other = (a, b) if a.is_leader else (b, a)
        assert other.leader == first.node
        await asyncio.sleep(random.uniform(0, renew))               # killed anywhere between two renewals
        tasks[first.node].cancel()                                   # killed: no resign, the lease runs out
        await asyncio.gather(tasks[first.node], return_exceptions=True)
        killed = time.monotonic()
        while not other.is_leader:
            assert time.monotonic() - killed < 10, "nobody took over"
            await asyncio.sleep(0.02)
        takeover = time.monotonic() - killed
        print(f"takeover after the leader's death: {takeover:.2f} s (lease_ttl {ttl} s, renew {renew} s)")
        assert takeover < ttl + renew + 0.3 and takeover < 5.0, takeover
        assert other.token > first.token
        with pytest.raises(Fenced):                                  # the dead leader's writes are refused
            await store.leader.hset_fenced(f"{first.token}:{first.node}", "t:cluster:probe", {"x": "1"})
    finally:
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_paused_leader_whose_lease_ran_out_is_fenced_off(store: Store) -> None:
    a = Leadership("a", store.leader, ttl=0.3, renew=0.1)
    b = Leadership("b", store.leader, ttl=0.3, renew=0.1)
    assert await a.step() is True
    holder = a.fence()
    await asyncio.sleep(0.4)                                         # a is paused past its lease (no step)
    assert await b.step() is True
    assert a.holder == holder                                        # a has not noticed yet
    with pytest.raises(Fenced):
        await store.campaign_work.enqueue("c1", holder, time.time(), 10, time.time() + 3600)
    assert await a.step() is False and a.leader == "b"


# ------------------------------------------------------------------ the campaign work stream
async def contacts(store: Store, cid: str, count: int) -> None:
    for i in range(count):
        await store.campaigns.add_contact(cid, f"+1202555{i:04d}", {"name": f"c{i}"})


async def test_the_leaders_claim_leases_and_queues_each_contact_once(store: Store) -> None:
    await contacts(store, "c1", 5)
    _, holder = await store.leader.acquire("a", 3000)
    await store.campaign_work.ensure_group("c1")
    first = await store.campaign_work.enqueue("c1", holder, time.time(), 3, time.time() + 3600)
    assert first == [("1", 1), ("2", 1), ("3", 1)]
    assert await store.campaigns.leased_count("c1") == 3 and await store.campaigns.due_count("c1") == 2
    await store.campaigns.requeue("c1", "2", 0)                      # back in line: its next claim is a new one
    second = await store.campaign_work.enqueue("c1", holder, time.time(), 10, time.time() + 3600)
    assert second == [("2", 2), ("4", 1), ("5", 1)]
    assert await store.campaign_work.backlog("c1") == {"queued": 6, "pending": 0}
    items = await store.campaign_work.read(["c1"], "a", count=10)
    stale = next(i for i in items if (i.n, i.attempt) == ("2", 1))
    assert await store.campaign_work.take(stale, "a") == ("stale", "")   # superseded by claim 2
    fresh = next(i for i in items if (i.n, i.attempt) == ("2", 2))
    assert await store.campaign_work.take(fresh, "a") == ("taken", "a")
    assert await store.campaign_work.take(fresh, "b") == ("done", "a")


async def test_two_consumers_one_dies_mid_way_every_claim_is_dialled_exactly_once(store: Store) -> None:
    cid, total = "c1", 200
    await contacts(store, cid, total)
    _, holder = await store.leader.acquire("leader", 30_000)
    work = store.campaign_work
    await work.ensure_group(cid)
    assert len(await work.enqueue(cid, holder, time.time(), total, time.time() + 3600)) == total
    dialled: list[tuple[str, str]] = []
    dying = asyncio.Event()

    def dialler(node: str, die_after: int | None) -> CampaignWork:
        async def dial(c: str, n: str) -> None:
            await store.campaigns.set_status(c, int(n), "in_progress", {"node": node})
            dialled.append((node, n))                                # handed to Asterisk ...
            if die_after is not None and len(dialled) >= die_after:
                dying.set()
                await asyncio.Event().wait()                         # ... and the node dies before its XACK
        return CampaignWork(work, node, dial, campaigns=lambda: [cid], idle_s=0.5, reclaim_every=0.2,
                            block_ms=100)

    a, b = dialler("a", die_after=60), dialler("b", None)
    # a reads a first batch of 50 and the next, and dies on its 60th dial; b starts only after a's death, so
    # all that is left is in a's pending list or not read yet
    a_task = asyncio.create_task(a.run())
    await asyncio.wait_for(dying.wait(), 20)
    a_task.cancel()
    await asyncio.gather(a_task, return_exceptions=True)
    pending_of_a = (await store.redis.xpending(store.keys.campaign_work(cid), GROUP))["pending"]
    assert pending_of_a > 0
    b_task = asyncio.create_task(b.run())
    try:
        deadline = time.monotonic() + 30
        while (await work.backlog(cid))["queued"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        b_task.cancel()
        await asyncio.gather(b_task, return_exceptions=True)
    numbers = [n for _, n in dialled]
    assert sorted(numbers, key=int) == [str(n) for n in range(1, total + 1)]   # every one, none twice
    wins = {}
    for n in range(1, total + 1):
        wins[str(n)] = await work.attempt_holder(cid, str(n), 1)
    assert sum(1 for v in wins.values() if v) == total                        # one SET NX win per claim
    assert all(wins[n] == node for node, n in dialled)                        # the winner is who dialled
    assert await work.backlog(cid) == {"queued": 0, "pending": 0}
    assert b.counts["reclaimed"] >= pending_of_a and b.counts["done"] == 1   # a's last dial: not again
    print(f"a dialled {sum(1 for node, _ in dialled if node == 'a')}, b took over {b.counts['reclaimed']} "
          f"pending entries of a and dialled {sum(1 for node, _ in dialled if node == 'b')}")


async def test_a_claim_taken_and_not_dialled_is_taken_over_and_the_paused_taker_cannot_dial_it(store: Store) -> None:
    from ivr.store.campaign_work import TakenOver
    await contacts(store, "c1", 1)
    _, holder = await store.leader.acquire("leader", 3000)
    work = store.campaign_work
    await work.ensure_group("c1")
    await work.enqueue("c1", holder, time.time(), 1, time.time() + 3600)
    [item] = await work.read(["c1"], "a")
    assert await work.take(item, "a") == ("taken", "a")               # a takes it, then stalls before dialling
    await asyncio.sleep(0.05)
    assert await work.take(item, "b") == ("done", "a")                # a plain read by b: not b's
    [again] = await work.autoclaim("c1", "b", min_idle_ms=10)
    assert again == item
    assert await work.take(again, "b", takeover=True) == ("taken", "b")   # reclaimed: taken over
    with pytest.raises(TakenOver):                                    # a resumes: its dial is refused
        await work.mark_in_progress("c1", "1", 1, "a", {"node": "a"})
    await work.mark_in_progress("c1", "1", 1, "b", {"node": "b", "attempts": "1"})
    c = await store.campaigns.contact("c1", 1) or {}
    assert c["status"] == "in_progress" and c["node"] == "b" and c["attempts"] == "1"
    counts = await store.campaigns.counts("c1", ["pending", "in_progress"])
    assert counts == {"pending": 0, "in_progress": 1}                 # the counters moved as set_status does
    assert await work.take(again, "c", takeover=True) == ("done", "b")   # dialled: nobody takes it over


async def test_a_fenced_sweep_claim_of_a_dropped_place_is_refused_to_an_old_leader(store: Store) -> None:
    await store.redis.zadd(store.keys.dropped_due, {"+15550002": 1.0})
    await store.redis.hset(store.keys.dropped, "+15550002", '{"queue": "support"}')
    _, old = await store.leader.acquire("a", 100)
    await asyncio.sleep(0.15)
    _, new = await store.leader.acquire("b", 3000)
    with pytest.raises(Fenced):
        await store.continuity.claim_place("+15550002", fence=old)
    assert await store.redis.zscore(store.keys.dropped_due, "+15550002") == 1.0      # untouched
    assert await store.continuity.claim_place("+15550002", fence=new) == (True, '{"queue": "support"}')
    assert await store.continuity.claim_place("+15550002", fence=new) == (False, None)   # once


async def test_the_leaders_tiers_are_published_fenced(store: Store) -> None:
    _, old = await store.leader.acquire("a", 100)
    await store.leader.publish_tiers(old, '{"support": {"open": true, "since": 1.0}}', "a")
    assert await store.leader.tiers() == '{"support": {"open": true, "since": 1.0}}'
    await asyncio.sleep(0.15)
    _, new = await store.leader.acquire("b", 3000)
    with pytest.raises(Fenced):
        await store.leader.publish_tiers(old, '{"support": {"open": false, "since": 2.0}}', "a")
    raw = await store.redis.hgetall(store.keys.cluster_balance)
    assert raw["node"] == "a" and raw["token"] == "1" and '"open": true' in raw["tiers"]
    await store.leader.publish_tiers(new, "{}", "b")
    assert (await store.redis.hgetall(store.keys.cluster_balance))["token"] == "2"


async def test_a_clustered_controller_shows_the_leader_in_health_live_view_and_metrics(store: Store) -> None:
    from ivr.app.config_load import from_mapping
    from ivr.app.controller import Controller

    cfg = from_mapping({"node": "a", "cluster": {"enabled": True}, "queues": [{"name": "support"}],
                        "asterisk": {"trunk_uri": "sip:127.0.0.1:5999"}}, {})
    c = Controller(cfg, store)
    assert c.leadership.clustered and c.campaign_work is not None
    assert c.balance.leadership is c.leadership and c.dialer.leadership is c.leadership
    assert c.dispatcher.leadership is c.leadership
    before = (await c.system.health())["cluster"]
    assert {k: before[k] for k in ("node", "leader", "leading", "token")} == {
        "node": "a", "leader": "", "leading": False, "token": 0}
    assert await c.leadership.step()
    after = (await c.system.health())["cluster"]
    assert {k: after[k] for k in ("node", "leader", "leading", "token")} == {
        "node": "a", "leader": "a", "leading": True, "token": 1}
    assert c.services.live.picture()["cluster"] == {"node": "a", "leader": "a", "leading": True, "token": 1}
    text = c.services.live.metrics_text().decode()
    assert 'ivr_leader{node="a"} 1.0' in text and "ivr_leader_changes_total 1.0" in text
    await c.leadership.resign()
