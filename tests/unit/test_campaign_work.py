"""The campaign work consumer (ivr/campaigns/work.py) against a fake stream store: who dials an entry, when it is
acknowledged, what happens after a failure half-way and after XAUTOCLAIM."""

from __future__ import annotations

import asyncio
from typing import Sequence

import pytest

from ivr.campaigns.dial_rules import NODE_LOST, lost_attempt_outcome
from ivr.campaigns.work import CampaignWork
from ivr.store.campaign_work import WorkItem


class FakeWork:
    """A consumer group in memory with the take rule of TAKE_LUA (claims current unless settled)."""

    def __init__(self) -> None:
        self.entries: dict[str, WorkItem] = {}          # not acknowledged (queued or pending)
        self.delivered: dict[str, str] = {}              # entry -> consumer it was delivered to
        self.keys: dict[tuple[str, str, int], str] = {}  # SET NX keys: (cid, n, attempt) -> node
        self.dialled_contacts: set[tuple[str, str]] = set()
        self.settled: set[tuple[str, str]] = set()       # claims settled without this entry (recovery, ...)
        self.acked: list[str] = []
        self.groups: set[str] = set()

    def add(self, cid: str, n: str, attempt: int) -> WorkItem:
        item = WorkItem(cid, f"{len(self.entries) + len(self.acked) + 1}-0", n, attempt)
        self.entries[item.entry] = item
        return item

    async def ensure_group(self, cid: str) -> None:
        self.groups.add(cid)

    async def read(self, cids: Sequence[str], consumer: str, count: int = 50, block_ms: int = 500,
                   own_pending: bool = False) -> list[WorkItem]:
        out = []
        for entry, item in self.entries.items():
            if item.cid not in cids:
                continue
            owner = self.delivered.get(entry)
            if (own_pending and owner == consumer) or (not own_pending and owner is None):
                self.delivered[entry] = consumer
                out.append(item)
        if not out and not own_pending:
            await asyncio.sleep(block_ms / 1000)      # XREADGROUP BLOCK: nothing new, wait a while
        return out[:count]

    async def autoclaim(self, cid: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[WorkItem]:
        out = [i for e, i in self.entries.items() if i.cid == cid and self.delivered.get(e) not in (None, consumer)]
        for item in out:
            self.delivered[item.entry] = consumer
        return out

    async def take(self, item: WorkItem, node: str, takeover: bool = False) -> tuple[str, str]:
        key = (item.cid, item.n, item.attempt)
        holder = self.keys.get(key)
        if holder is not None:
            dialled = (item.cid, item.n) in self.dialled_contacts
            if not dialled and (holder == node or takeover):
                self.keys[key] = node
                return "taken", node
            return "done", holder
        if (item.cid, item.n) in self.settled:
            return "stale", ""
        self.keys[key] = node
        return "taken", node

    async def ack(self, item: WorkItem) -> None:
        self.entries.pop(item.entry, None)
        self.delivered.pop(item.entry, None)
        self.acked.append(item.entry)


def consumer(store: FakeWork, node: str, dials: list[tuple[str, str, str]], fail: set[str] | None = None) -> CampaignWork:
    async def dial(cid: str, n: str) -> None:
        if fail and n in fail:
            raise ConnectionError("Redis went away half-way")
        dials.append((node, cid, n))
        store.dialled_contacts.add((cid, n))

    return CampaignWork(store, node, dial, campaigns=lambda: ["c1"])  # type: ignore[arg-type]


def test_each_entry_is_dialled_once_and_acknowledged_after_the_dial() -> None:
    store, dials = FakeWork(), []
    for n in range(1, 4):
        store.add("c1", str(n), 1)
    a = consumer(store, "a", dials)
    assert asyncio.run(a.poll_once()) == 3
    assert dials == [("a", "c1", "1"), ("a", "c1", "2"), ("a", "c1", "3")]
    assert store.entries == {} and len(store.acked) == 3
    assert a.counts["taken"] == 3 and store.groups == {"c1"}


def test_a_duplicate_entry_of_a_claim_another_node_took_is_skipped_and_acknowledged() -> None:
    store, dials = FakeWork(), []
    first = store.add("c1", "7", 2)
    a, b = consumer(store, "a", dials), consumer(store, "b", dials)
    asyncio.run(a.handle(first))
    again = store.add("c1", "7", 2)                  # the same claim delivered again (an XAUTOCLAIM race)
    assert asyncio.run(b.handle(again)) == "done"
    assert dials == [("a", "c1", "7")]
    assert again.entry in store.acked and b.counts["done"] == 1


def test_a_claim_settled_meanwhile_is_stale_and_not_dialled() -> None:
    store, dials = FakeWork(), []
    item = store.add("c1", "9", 1)
    store.settled.add(("c1", "9"))
    assert asyncio.run(consumer(store, "a", dials).handle(item)) == "stale"
    assert dials == [] and store.entries == {}


def test_a_dial_that_fails_half_way_stays_pending_and_is_dialled_by_the_same_node_later() -> None:
    store, dials = FakeWork(), []
    store.add("c1", "5", 1)
    failing = consumer(store, "a", dials, fail={"5"})
    with pytest.raises(ConnectionError):
        asyncio.run(failing.poll_once())
    assert store.entries and store.keys == {("c1", "5", 1): "a"}     # taken, not dialled, not acknowledged
    other = consumer(store, "b", dials)
    assert asyncio.run(other.poll_once()) == 0                          # not someone else's new entry
    retry = consumer(store, "a", dials)
    assert asyncio.run(retry.poll_once(own_pending=True)) == 1          # its own pending entry, taken again
    assert dials == [("a", "c1", "5")] and store.entries == {}


def test_a_dead_nodes_entries_are_reclaimed_and_each_dialled_once() -> None:
    store, dials = FakeWork(), []
    for n in range(1, 11):
        store.add("c1", str(n), 1)
    dead = consumer(store, "a", dials)

    async def read_five_then_die() -> None:
        items = await store.read(["c1"], "a")        # a reads all ten ...
        for item in items[:5]:                        # ... handles five, then dies without acknowledging more
            await dead.handle(item)

    asyncio.run(read_five_then_die())
    survivor = consumer(store, "b", dials)
    assert asyncio.run(survivor.poll_once()) == 0                       # nothing new for b
    assert asyncio.run(survivor.reclaim_once()) == 5
    assert sorted(int(n) for _, _, n in dials) == list(range(1, 11))   # all ten, none twice
    assert [node for node, _, n in dials if int(n) > 5] == ["b"] * 5
    assert store.entries == {} and survivor.counts["reclaimed"] == 5


def test_run_reads_nothing_while_the_node_cannot_dial() -> None:
    async def scenario() -> list[tuple[str, str, str]]:
        store, dials = FakeWork(), []
        store.add("c1", "1", 1)
        up = {"ami": False}
        work = CampaignWork(store, "a", lambda cid, n: asyncio.sleep(0, dials.append(("a", cid, n))),  # type: ignore[arg-type]
                            campaigns=lambda: ["c1"], ready=lambda: up["ami"], reclaim_every=0.05)
        task = asyncio.create_task(work.run())
        await asyncio.sleep(0.3)
        assert dials == [] and store.entries
        up["ami"] = True
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return dials

    assert asyncio.run(scenario()) == [("a", "c1", "1")]


def test_a_reclaimed_claim_the_dead_node_took_but_never_dialled_is_taken_over() -> None:
    store, dials = FakeWork(), []
    item = store.add("c1", "3", 1)

    async def take_and_die() -> None:
        await store.read(["c1"], "a")
        assert await store.take(item, "a") == ("taken", "a")       # then a dies before dialling

    asyncio.run(take_and_die())
    survivor = consumer(store, "b", dials)
    assert asyncio.run(survivor.reclaim_once()) == 1
    assert dials == [("b", "c1", "3")] and store.keys[("c1", "3", 1)] == "b"


def test_an_attempt_left_in_progress_by_a_lost_node_is_never_dialled_blindly() -> None:
    code = "c:camp:7:1"
    # the callee's choice was recorded for this very attempt: that is its outcome
    assert lost_attempt_outcome({"attempt_id": code, "key_attempt": code, "key_action": "refund"}) == ("refund", "done")
    assert lost_attempt_outcome({"attempt_id": code, "key_attempt": code, "key_action": "optout"}) == ("optout", "optout")
    # no choice, or one of an earlier attempt: the call may have been answered; closed, not retried
    assert lost_attempt_outcome({"attempt_id": code}) == (NODE_LOST, "failed")
    assert lost_attempt_outcome({"attempt_id": "c:camp:7:2", "key_attempt": code, "key_action": "callback"}) == \
        (NODE_LOST, "failed")
    assert lost_attempt_outcome({"attempt_id": "", "key_attempt": "", "key_action": "refund"}) == (NODE_LOST, "failed")
    assert lost_attempt_outcome({"attempt_id": code, "key_attempt": code, "key_action": "repeat"}) == (NODE_LOST, "failed")
