"""The dialer of a cluster on a real Redis with fake AMIs: only the leader claims, into the work stream; the
node that takes a claim originates it on its own Asterisk and marks the contact with its name; recovery at a
node's restart settles only that node's attempts; a follower claims nothing; what a lost node left in progress
is settled by the leader's sweep, fenced, and never dialled again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ivr.app.config import Config
from ivr.app.config_load import from_mapping
import pytest

from ivr.campaigns import contacts
from ivr.campaigns.dial_rules import NODE_LOST
from ivr.campaigns.dialer import Dialer
from ivr.campaigns.model import campaign_from_dict
from ivr.campaigns.work import CampaignWork
from ivr.cluster.leader import Leadership
from ivr.cluster.lost import LostNodeSweep
from ivr.store.leader import Fenced
from ivr.store.redis_store import Store

CID = "t-cluster"


class FakeAmi:
    """Records Originates (answered later by nobody) and lists no live channel."""

    def __init__(self) -> None:
        self.originates: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.ready.set()
        self.connected = True

    async def action(self, name: str, fields: dict[str, Any], **_: Any) -> Any:
        self.originates.append(dict(fields))
        await asyncio.Event().wait()      # the call rings on: no OriginateResponse in this test

    async def list_action(self, name: str, fields: Any = None, **_: Any) -> list[Any]:
        return []


def node_cfg(node: str) -> Config:
    return from_mapping({"node": node, "cluster": {"enabled": True},
                         "asterisk": {"trunk_uri": "sip:127.0.0.1:5999"},
                         "outbound": {"allowed_prefixes": ["+1"]}}, {})


async def test_the_leader_claims_into_the_stream_and_each_node_dials_what_it_takes(store: Store) -> None:
    la, lb = Leadership("a", store.leader, 3.0, 1.0), Leadership("b", store.leader, 3.0, 1.0)
    assert await la.step() and not await lb.step()
    ami_a, ami_b = FakeAmi(), FakeAmi()
    a = Dialer(node_cfg("a"), store, ami_a, leadership=la)  # type: ignore[arg-type]
    b = Dialer(node_cfg("b"), store, ami_b, leadership=lb)  # type: ignore[arg-type]
    await a.create(campaign_from_dict({
        "id": CID, "name": CID, "message": {"en": "notice-cancelled"}, "amd": False,
        "window": {"start": "00:00", "end": "23:59"}, "allowed_prefixes": ["+1"],
        "pacing": {"cps": 6, "max_channels": 6}}))
    for i in range(10):
        number = f"+1202555{i:04d}"
        await store.campaigns.add_contact(CID, number, {"number": number, "name": f"c{i}", "tz": "America/New_York"})
    await a.set_state(CID, "running")
    for d in (a, b):
        await d._refresh()
        d.running[CID].tokens = 6.0
    await b._pace(CID, b.running[CID])                                   # a follower's pacer claims nothing ...
    assert await store.campaigns.leased_count(CID) == 0
    await a._pace(CID, a.running[CID])                                   # ... the leader's claims six
    assert await store.campaigns.leased_count(CID) == 6
    assert await store.campaign_work.backlog(CID) == {"queued": 6, "pending": 0}
    assert ami_a.originates == []                                        # claimed, not dialled by the pacer

    work_a = CampaignWork(store.campaign_work, "a", a.dial_claimed, campaigns=lambda: [CID], block_ms=50)
    work_b = CampaignWork(store.campaign_work, "b", b.dial_claimed, campaigns=lambda: [CID], block_ms=50)
    await work_b._cids()
    items = await store.campaign_work.read([CID], "b", count=4)         # b reads four, a the rest
    for item in items:
        await work_b.handle(item)
    assert await work_a.poll_once() == 2
    await asyncio.sleep(0.05)                                            # the Originate tasks run
    assert (len(ami_a.originates), len(ami_b.originates)) == (2, 4)
    dialled = {f["Variable"][1] for f in ami_a.originates + ami_b.originates}
    assert len(dialled) == 6                                             # six contacts, each once
    by_node = {}
    for n in range(1, 11):
        c = await contacts.contact(store.campaigns, None, CID, n) or {}
        if c.get("status") == "in_progress":
            by_node[n] = c["node"]
    assert sorted(by_node.values()) == ["a", "a", "b", "b", "b", "b"]
    assert await store.campaign_work.backlog(CID) == {"queued": 0, "pending": 0}

    # a campaign paused after its claim was queued: the claim, taken, goes back in line and is not dialled
    [(n7, attempt)] = await store.campaign_work.enqueue(CID, la.fence(), time.time(), 1, time.time() + 3600)
    assert n7 not in by_node and attempt == 1
    await a.set_state(CID, "paused")
    assert await work_b.poll_once() == 1
    assert await store.campaigns.leased_count(CID) == 6 and await store.campaigns.due_count(CID) == 4
    assert len(ami_b.originates) == 4
    await a.set_state(CID, "running")

    # the leader's pacer counts every node's calls (the leases): max_channels 6 reached, nothing more claimed
    a.running[CID].tokens = 6.0
    await a._pace(CID, a.running[CID])
    assert await store.campaigns.leased_count(CID) == 6

    # b restarts: its recovery settles b's four attempts (no live channel: outcome unknown) and not a's two
    restarted = Dialer(node_cfg("b"), store, FakeAmi(), leadership=Leadership("b", store.leader, 3.0, 1.0))  # type: ignore[arg-type]
    summary = await restarted.recover()
    assert summary["unknown"] == 4 and summary["others"] == 2, summary
    left = {n: (await contacts.contact(store.campaigns, None, CID, n) or {}).get("status") for n in by_node}
    assert sorted(s for s in left.values()) == ["in_progress", "in_progress", "pending", "pending", "pending",
                                                 "pending"]
    for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
        task.cancel()


async def test_the_leader_settles_what_a_lost_node_left_in_progress_once_and_fenced(store: Store) -> None:
    """b dials three contacts and dies: the leader's lost-node sweep closes them (the callee's recorded choice,
    else node_lost) on a real Redis, fenced against an old leader's holder, once; nothing is dialled again."""
    la, lb = Leadership("a", store.leader, 3.0, 1.0), Leadership("b", store.leader, 3.0, 1.0)
    assert await la.step() and not await lb.step()
    ami_b = FakeAmi()
    a = Dialer(node_cfg("a"), store, FakeAmi(), leadership=la)  # type: ignore[arg-type]
    b = Dialer(node_cfg("b"), store, ami_b, leadership=lb)  # type: ignore[arg-type]
    cid = "t-lost"
    await a.create(campaign_from_dict({
        "id": cid, "name": cid, "message": {"en": "notice-cancelled"}, "amd": False, "max_attempts": 3,
        "window": {"start": "00:00", "end": "23:59"}, "allowed_prefixes": ["+1"],
        "retry": {"busy": 1, "no_answer": 1, "failed": 1, "no_key": 1, "machine": 1, "unknown": 1},
        "pacing": {"cps": 4, "max_channels": 4}}))
    for i in range(5):
        number = f"+1202555{i:04d}"
        await store.campaigns.add_contact(cid, number, {"number": number, "name": f"c{i}", "tz": "America/New_York"})
    await a.set_state(cid, "running")
    await a._refresh()
    a.running[cid].tokens = 4.0
    await a._pace(cid, a.running[cid])
    work_b = CampaignWork(store.campaign_work, "b", b.dial_claimed, campaigns=lambda: [cid], block_ms=50)
    assert await work_b.poll_once() == 4
    await asyncio.sleep(0.05)
    dialled = sorted(int(f["Variable"][1].split("=")[1]) for f in ami_b.originates)
    assert len(dialled) == 4
    chose, busy, lost1, lost2 = dialled
    # the callee of `chose` pressed 1 (recorded before its action); `busy` got its outcome before b died
    code = (await contacts.contact(store.campaigns, None, cid, chose) or {})["attempt_id"]
    await store.campaigns.set_contact_fields(cid, chose, {"keypress": "1", "key_action": "refund",
                                                          "key_attempt": code})
    await b.finish_attempt(cid, str(busy), 1, "busy")
    due_before = await store.campaigns.due_count(cid)

    now = time.time()
    await store.cluster.heartbeat("a", {"at": now, "api": "", "started": 0, "ami": True, "ami_down_since": 0})
    await store.cluster.heartbeat("b", {"at": now - 30, "api": "", "started": 0, "ami": True, "ami_down_since": 0})

    class OldLead:   # a leader that lost its lease and does not know it yet
        holder, is_leader = "0:c", True

    old = LostNodeSweep(store.cluster, OldLead(), "c", ttl=5.0, every=1.0, settle_attempts=a.settle_lost)
    with pytest.raises(Fenced):
        await old.sweep()
    assert await store.campaigns.leased_count(cid) == 3                  # nothing written by the old leader

    sweep = LostNodeSweep(store.cluster, la, "a", ttl=5.0, every=1.0, settle_attempts=a.settle_lost)
    await sweep.sweep()
    await sweep.sweep()                                                  # a second pass settles nothing more
    assert sweep.attempts_settled == 3
    got = {n: await contacts.contact(store.campaigns, None, cid, n) or {} for n in (chose, busy, lost1, lost2)}
    assert (got[chose]["status"], got[chose]["last_outcome"]) == ("done", "refund")
    assert (got[busy]["status"], got[busy]["last_outcome"]) == ("pending", "busy")   # its own outcome came first
    for n in (lost1, lost2):
        assert (got[n]["status"], got[n]["last_outcome"], got[n]["node"], got[n]["attempts"]) == \
            ("failed", NODE_LOST, "b", "1"), got[n]
    assert await store.campaigns.leased_count(cid) == 0 and await store.campaigns.due_count(cid) == due_before
    counts = await contacts.counts(store.campaigns, None, cid)
    assert (counts["in_progress"], counts["failed"], counts["done"]) == (0, 2, 1), counts
    attempts = await store.redis.xrange(store.keys.campaign_attempts(cid))
    assert sorted((f["n"], f["outcome"]) for _, f in attempts if f.get("node") == "b") == sorted(
        [(str(chose), "refund"), (str(lost1), NODE_LOST), (str(lost2), NODE_LOST)])

    # b was only paused and comes back: a late outcome neither reopens a closed contact nor dials it again
    await b.finish_attempt(cid, str(lost1), 1, "no_answer")
    assert (await contacts.contact(store.campaigns, None, cid, lost1) or {})["status"] == "failed"
    assert await store.campaigns.due_count(cid) == due_before
    # b restarted: its recovery finds nothing of its own left to settle
    restarted = Dialer(node_cfg("b"), store, FakeAmi(), leadership=Leadership("b", store.leader, 3.0, 1.0))  # type: ignore[arg-type]
    summary = await restarted.recover()
    assert not any(summary.values()), summary
    assert len(ami_b.originates) == 4
    for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
        task.cancel()
