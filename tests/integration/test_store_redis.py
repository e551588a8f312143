"""The call record's finish on a real Redis: one atomic Lua call, exactly one stream entry per call."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ivr.store.redis_store import Store


async def test_finish_writes_once_and_appends_the_merged_record_once(store: Store) -> None:
    await store.call_update("1.1", {"caller": "5550001", "menu": "main", "path": json.dumps(["a", "b"])})
    rec = await store.call_finish("1.1", {"outcome": "self_service", "ended_at": 12.5, "uniqueid": "forged"})
    assert rec["uniqueid"] == "1.1" and rec["finished"] == "1" and rec["outcome"] == "self_service"
    assert rec["path"] == ["a", "b"] and rec["caller"] == "5550001"
    # a second finish (a duplicate Hangup, or a retry whose reply was lost) changes nothing
    again = await store.call_finish("1.1", {"outcome": "abandoned"})
    assert again["outcome"] == "self_service"
    entries = await store.recent_calls(10)
    assert len(entries) == 1
    e = entries[0]
    assert e["uniqueid"] == "1.1" and e["outcome"] == "self_service" and e["path"] == ["a", "b"]
    assert e["ended_at"] == "12.5" and e["caller"] == "5550001"
    ttl = await store.redis.ttl(store.keys.call("1.1"))
    assert ttl > 86400


async def test_finish_of_a_call_never_seen_still_leaves_a_record(store: Store) -> None:
    rec = await store.call_finish("2.2", {"outcome": "before_ivr", "hangup_cause": "Normal Clearing"})
    assert rec["uniqueid"] == "2.2" and rec["path"] == []
    assert [e["uniqueid"] for e in await store.recent_calls(10)] == ["2.2"]


async def test_batch_applies_many_calls_in_order_in_one_round_trip(store: Store) -> None:
    replies = await store.call_batch([
        ("setnx", "3.1", {"caller": "5550003", "started_at": 1.0}),
        ("setnx", "3.1", {"caller": "other", "queue": "refunds"}),   # first writer wins, new fields still set
        ("set", "3.2", {"menu": "main"}),
        ("get", "3.1", None),
        ("set", "3.1", {"answered_at": 5.0}),
        ("get", "3.1", None),
        ("get", "3.9", None),                                        # no such call
    ])
    assert replies[:3] == [None, None, None]
    assert replies[3]["caller"] == "5550003" and replies[3]["queue"] == "refunds"
    assert "answered_at" not in replies[3]                           # a get sees the writes before it only
    assert replies[5]["answered_at"] == "5.0" and replies[6] == {}
    assert await store.redis.ttl(store.keys.call("3.2")) > 86400


async def test_batch_error_of_one_operation_spares_the_others(store: Store) -> None:
    await store.redis.set(store.keys.call("4.bad"), "not a hash")          # a damaged key: WRONGTYPE
    replies = await store.call_batch([("set", "4.1", {"menu": "main"}), ("set", "4.bad", {"menu": "main"}),
                                      ("get", "4.bad", None), ("set", "4.2", {"menu": "main"})])
    assert replies[0] is None and replies[3] is None
    assert "WRONGTYPE" in str(replies[1]) and "WRONGTYPE" in str(replies[2])
    assert (await store.call_get("4.1"))["menu"] == "main" and (await store.call_get("4.2"))["menu"] == "main"
    with pytest.raises(Exception, match="WRONGTYPE"):
        await store.call_update("4.bad", {"menu": "x"})
    done = await store.call_finish_many([("4.1", {"outcome": "x"}), ("4.bad", {"outcome": "x"}),
                                         ("4.2", {"outcome": "y"})])
    assert done[0]["outcome"] == "x" and done[2]["outcome"] == "y" and isinstance(done[1], Exception)
    assert sorted(e["uniqueid"] for e in await store.recent_calls(10)) == ["4.1", "4.2"]


async def test_finish_many_loads_the_script_again_after_redis_lost_it(store: Store) -> None:
    await store.call_finish("5.0", {"outcome": "x"})
    await store.redis.script_flush()                                        # as after a restart without it
    done = await store.call_finish_many([("5.1", {"outcome": "a"}), ("5.2", {"outcome": "b"})])
    assert [d["outcome"] for d in done] == ["a", "b"]
    assert len(await store.recent_calls(10)) == 3


async def test_batch_writes_load_their_script_again_after_redis_lost_it(store: Store) -> None:
    await store.call_update("6.1", {"menu": "main"})
    await store.redis.script_flush()
    replies = await store.call_batch([("setnx", "6.1", {"menu": "other", "caller": "5550006"}), ("get", "6.1", None)])
    assert replies[0] is None and replies[1]["menu"] == "main" and replies[1]["caller"] == "5550006"


async def test_caller_histories_many_calls_one_round_trip_and_after_redis_lost_the_script(store: Store) -> None:
    from ivr.continuity.service import Continuity, ContinuityConfig

    c = Continuity(ContinuityConfig(history=2), store)
    await store.redis.sadd(f"{store.keys.prefix}:caller:+5557001:live", "a1", "a2")
    calls = [({"uniqueid": f"a{i}", "caller": "5557001", "outcome": "answered" if i == 2 else "self_service",
               "answered_at": "1700000000.5" if i == 2 else "", "menu": "main"}, None) for i in (1, 2, 3)]
    await c.remember_many(calls)
    key = f"{store.keys.prefix}:caller:+5557001"
    assert await store.redis.llen(f"{key}:calls") == 2                    # capped at history=2, newest first
    assert await store.redis.scard(f"{key}:live") == 0
    assert await store.redis.hget(key, "last_answered") == "1700000000.5"
    await store.redis.script_flush()
    await c.remember({"uniqueid": "a4", "caller": "5557001", "outcome": "self_service", "menu": "main"})
    first = await store.redis.lindex(f"{key}:calls", 0)
    assert first is not None and "a4" in first


# ---------------------------------------------------------------- callback claims (leases)
async def _in_line(store: Store) -> list[tuple[str, float]]:
    return await store.redis.zrange(store.keys.callbacks_pending, 0, -1, withscores=True)


async def _leases(store: Store) -> list[tuple[str, float]]:
    return await store.redis.zrange(store.keys.callbacks_leases, 0, -1, withscores=True)


async def test_a_claim_is_a_lease_and_one_claimer_wins(store: Store) -> None:
    cb = await store.callbacks.request("5550101", queue="support", joined_at=1000.0)
    other = Store(store.redis, "t")   # a second node on the same Redis
    got = await asyncio.gather(store.callbacks.claim(cb["id"], node="a"), other.callbacks.claim(cb["id"], node="b"))
    assert sum(1 for g in got if g) == 1
    rec = next(g for g in got if g)
    assert rec["status"] == "dialling" and rec["lease"] and rec["lease_node"] in ("a", "b")
    assert await _in_line(store) == []
    (cb_id, until), = await _leases(store)
    assert cb_id == cb["id"] and until > time.time() + 60


async def test_a_claim_left_by_a_killed_process_goes_back_to_its_place(store: Store) -> None:
    early = await store.callbacks.request("5550102", queue="support", joined_at=1000.0)
    later = await store.callbacks.request("5550103", queue="support", joined_at=2000.0)
    assert await store.callbacks.claim(early["id"], node="ivr1")
    # the process dies here; the node starts again: a new store, holding nothing
    restarted = Store(store.redis, "t")
    orphans = await restarted.callbacks.orphans("ivr1")
    assert list(orphans) == [early["id"]]
    assert await restarted.callbacks.recover(orphans, live=set()) == {early["id"]: "requeued"}
    assert await _in_line(store) == [(early["id"], 1000.0), (later["id"], 2000.0)]   # ahead, as before
    assert await _leases(store) == []
    rec = await store.callbacks.get(early["id"])
    assert rec["status"] == "pending" and rec["attempts"] == "0" and rec["last_outcome"] == "unknown"
    assert "lease" not in rec and float(rec["not_before"]) <= time.time()


async def test_another_nodes_claim_is_left_alone_until_it_runs_out(store: Store) -> None:
    cb = await store.callbacks.request("5550104", queue="support", joined_at=1000.0)
    other = Store(store.redis, "t")
    assert await other.callbacks.claim(cb["id"], node="b", lease_s=30)
    assert await store.callbacks.orphans("a") == {}
    assert await other.callbacks.orphans("b") == {}             # b holds it: dialling, not orphaned
    later = await store.callbacks.orphans("a", now=time.time() + 31)
    assert list(later) == [cb["id"]]
    # b was still dialling after all and settles first: the recovery then changes nothing
    await other.callbacks.finish(cb["id"], "busy", retry_at=time.time() + 60)
    assert await store.callbacks.recover(later, live=set()) == {cb["id"]: "settled"}
    assert await _in_line(store) == [(cb["id"], 1000.0)]
    assert (await store.callbacks.get(cb["id"]))["last_outcome"] == "busy"


async def test_a_claim_whose_call_is_still_up_is_renewed_not_dialled_again(store: Store) -> None:
    cb = await store.callbacks.request("5550105", queue="support", joined_at=1000.0)
    assert await store.callbacks.claim(cb["id"], node="ivr1", lease_s=5)
    restarted = Store(store.redis, "t")
    orphans = await restarted.callbacks.orphans("ivr1")
    assert await restarted.callbacks.recover(orphans, live={cb["id"]}, lease_s=300) == {cb["id"]: "still_live"}
    assert await _in_line(store) == []
    (_, until), = await _leases(store)
    assert until > time.time() + 200
    # the call ends: the next round puts it back in line
    orphans = await restarted.callbacks.orphans("ivr1")
    assert await restarted.callbacks.recover(orphans, live=set()) == {cb["id"]: "requeued"}
    assert await _in_line(store) == [(cb["id"], 1000.0)]


async def test_a_late_outcome_after_recovery_is_ignored(store: Store) -> None:
    cb = await store.callbacks.request("5550106", queue="support", joined_at=1000.0)
    slow = Store(store.redis, "t")
    assert await slow.callbacks.claim(cb["id"], node="b", lease_s=1)
    orphans = await store.callbacks.orphans("a", now=time.time() + 2)
    assert await store.callbacks.recover(orphans, live=set()) == {cb["id"]: "requeued"}
    assert await store.callbacks.claim(cb["id"], node="a")      # dialled again by a
    await slow.callbacks.finish(cb["id"], "failed")               # b's outcome, long after its lease
    rec = await store.callbacks.get(cb["id"])
    assert rec["status"] == "dialling" and rec["lease_node"] == "a" and rec["attempts"] == "0"
    await store.callbacks.finish(cb["id"], "answered")
    rec = await store.callbacks.get(cb["id"])
    assert rec["status"] == "done" and rec["attempts"] == "1" and await _leases(store) == []


async def test_every_end_of_a_claim_releases_its_lease(store: Store) -> None:
    ids = [(await store.callbacks.request(f"555011{i}", queue="support", joined_at=1000.0 + i))["id"]
           for i in range(4)]
    for cb_id in ids:
        assert await store.callbacks.claim(cb_id, node="ivr1")
    await store.callbacks.finish(ids[0], "answered")
    await store.callbacks.finish(ids[1], "no answer", retry_at=time.time() + 60)
    await store.callbacks.postpone(ids[2], time.time() + 120, "caller on a call")
    await store.callbacks.close(ids[3], "reached", "the caller reached an agent meanwhile")
    assert await _leases(store) == [] and store.callbacks.held == {}
    assert await _in_line(store) == [(ids[1], 1001.0), (ids[2], 1002.0)]
    assert await store.callbacks.orphans("ivr1") == {}
    statuses = [(await store.callbacks.get(i))["status"] for i in ids]
    assert statuses == ["done", "pending", "pending", "reached"]
    assert [(await store.callbacks.get(i))["attempts"] for i in ids] == ["1", "1", "0", "0"]


async def test_an_outcome_lost_to_a_redis_error_leaves_a_claim_that_is_recovered(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from ivr.store.errors import StoreUnavailable
    from ivr.store.selfservice import SETTLE_LUA

    cb = await store.callbacks.request("5550109", queue="support", joined_at=1000.0)
    assert await store.callbacks.claim(cb["id"], node="ivr1")
    real = store.callbacks._script

    def redis_gone(lua: str) -> object:
        if lua == SETTLE_LUA:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return real(lua)
    monkeypatch.setattr(store.callbacks, "_script", redis_gone)
    with pytest.raises(StoreUnavailable):   # the store's own error: features never see redis's
        await store.callbacks.finish(cb["id"], "no answer", retry_at=time.time() + 60)
    monkeypatch.undo()
    # Redis is back: the claim is no longer held by anyone, and the next recovery round finds it
    orphans = await store.callbacks.orphans("ivr1")
    assert list(orphans) == [cb["id"]]
    assert await store.callbacks.recover(orphans, live=set()) == {cb["id"]: "requeued"}
    assert await _in_line(store) == [(cb["id"], 1000.0)]


async def test_a_dial_of_this_process_that_outlived_its_lease_cannot_settle_after_recovery(store: Store) -> None:
    cb = await store.callbacks.request("5550110", queue="support", joined_at=1000.0)
    assert await store.callbacks.claim(cb["id"], node="ivr1", lease_s=1)
    orphans = await store.callbacks.orphans("ivr1", now=time.time() + 2)    # held here, but run out
    assert list(orphans) == [cb["id"]]
    assert await store.callbacks.recover(orphans, live=set()) == {cb["id"]: "requeued"}
    other = Store(store.redis, "t")
    assert await other.callbacks.claim(cb["id"], node="ivr2")                # dialled again by another node
    await store.callbacks.finish(cb["id"], "no answer", retry_at=time.time() + 60)   # the stuck dial ends
    rec = await store.callbacks.get(cb["id"])
    assert rec["status"] == "dialling" and rec["lease_node"] == "ivr2" and rec["attempts"] == "0"
    assert await _in_line(store) == []
