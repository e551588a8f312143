"""The dialer of a cluster on a real Redis with fake AMIs: only the leader claims, into the work stream; the
node that takes a claim originates it on its own Asterisk and marks the contact with its name; recovery at a
node's restart settles only that node's attempts; a follower claims nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ivr.app.config import Config
from ivr.app.config_load import from_mapping
from ivr.campaigns import contacts
from ivr.campaigns.dialer import Dialer
from ivr.campaigns.model import campaign_from_dict
from ivr.campaigns.work import CampaignWork
from ivr.cluster.leader import Leadership
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
