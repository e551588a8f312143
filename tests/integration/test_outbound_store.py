"""The shared side of the outbound guard on a real Redis: the do-not-call list and the hourly caps are one
atomic check-and-count, shared by every node; a dropped caller the guard refuses is not made a callback."""

from __future__ import annotations

import asyncio
import time


from ivr.campaigns import contacts
from ivr.app.config import ContinuityConfig
from ivr.app.config_load import from_mapping
from ivr.continuity.service import Continuity
from ivr.app.metrics import Metrics
from ivr.campaigns.outbound import OutboundGuard
from ivr.store.outbound import hour_of
from ivr.store.redis_store import Store

ALLOWED = "+442079460000"


def guard_on(store: Store, **outbound: object) -> OutboundGuard:
    cfg = from_mapping({"outbound": {"allowed_prefixes": ["+44"], **outbound}}, {})
    return OutboundGuard(cfg, store, Metrics())


async def test_per_number_and_global_caps_hold_across_nodes(redis_url: str) -> None:
    node1, node2 = Store.from_url(redis_url, "g"), Store.from_url(redis_url, "g")
    try:
        g1 = guard_on(node1, per_number_hourly=2, global_hourly=3)
        g2 = guard_on(node2, per_number_hourly=2, global_hourly=3)
        assert (await g1.check(ALLOWED, "callback")).ok
        assert (await g2.check("442079460000", "campaign")).ok              # the same number, another node
        v = await g1.check(ALLOWED, "refund")
        assert (v.ok, v.reason) == (False, "cap_number")
        assert (await g2.check("447911123456", "callback")).ok              # another number: global 3 of 3
        v = await g1.check("447911123457", "callback")
        assert (v.ok, v.reason) == (False, "cap_global")
        assert (await g1.check("447911123458", "callback", count=False)).ok  # a check without a dial
        assert await node1.outbound.dialled() == 3 and await node1.outbound.dialled(ALLOWED) == 2
        ttl = await node1.redis.ttl(node1.keys.outbound_hour(hour_of()))
        assert 3600 < ttl <= 7200
        # the next hour starts from zero
        later = time.time() + 3600
        assert await node1.outbound.admit(ALLOWED, per_number=2, global_cap=3, now=later) == ""
        audit = await node1.audit_log(10)
        assert [(e["action"], e["new"]["reason"]) for e in audit] == [("outbound.refused", "cap_global"),
                                                                      ("outbound.refused", "cap_number")]
    finally:
        await node1.close()
        await node2.close()


async def test_a_cap_is_never_exceeded_by_concurrent_dials(redis_url: str) -> None:
    stores = [Store.from_url(redis_url, "c") for _ in range(4)]
    try:
        guards = [guard_on(s, per_number_hourly=100, global_hourly=25) for s in stores]
        verdicts = await asyncio.gather(*(guards[i % 4].check(f"4479111234{i:02d}", "campaign")
                                          for i in range(80)))
        assert sum(v.ok for v in verdicts) == 25
        assert {v.reason for v in verdicts if not v.ok} == {"cap_global"}
        assert await stores[0].outbound.dialled() == 25
    finally:
        for s in stores:
            await s.close()


async def test_the_do_not_call_list_is_refused_for_every_purpose(redis_url: str) -> None:
    store = Store.from_url(redis_url, "d")
    try:
        guard = guard_on(store)
        await contacts.add_dnc(store.redis, "d", ["+447911123456"])
        for purpose in ("callback", "campaign", "agent_mobile"):
            v = await guard.check("447911123456", purpose, count=False)
            assert (v.ok, v.reason) == (False, "dnc")
        assert await store.outbound.dialled() == 0
        assert guard.metrics.registry.get_sample_value("ivr_outbound_refused_total",
                                                       {"purpose": "agent_mobile", "reason": "dnc"}) == 1
    finally:
        await store.close()


async def test_a_dropped_caller_the_guard_refuses_is_not_called_back(redis_url: str) -> None:
    store = Store.from_url(redis_url, "k")
    c = Continuity(ContinuityConfig(window=60, callback_dropped=True), store)
    c.guard = guard_on(store)
    try:
        t = time.time()
        for uid, caller in (("u1", "449012345678"), ("u2", "881612345678"), ("u3", "12025550123"),
                            ("u4", "442079460000")):
            await c.remember({"uniqueid": uid, "caller": caller, "outcome": "abandoned", "queue": "support",
                              "wait": "40", "joined_at": str(t - 40), "ended_at": str(t)})
        assert await c.sweep(now=t + 90, callbacks=store.callbacks) == 1
        assert [p["number"] for p in await store.callbacks.pending(10)] == ["442079460000"]
        assert c.callbacks_refused == 3
        reasons = sorted(e["new"]["reason"] for e in await store.audit_log(10))
        assert reasons == ["not_allowed_prefix", "not_allowed_prefix", "type_premium_rate"]
    finally:
        await c.drain()
        await store.close()
