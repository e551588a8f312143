"""Dialling a cluster's campaign work: every node consumes the leader's claims from a Redis Stream.

Why each step (the store's side: ivr/store/campaign_work.py):
- the leader's pacer claims and appends to the stream in one fenced script, so a claim always has its entry;
- every node reads the consumer group (its node name as consumer) and, per entry, first *takes* the claim
  (SET NX of the claim's attempt key): only the taker dials, on its own Asterisk; a node that finds the key
  taken by another (or the claim settled meanwhile) acknowledges and skips. One claim, one dial at most;
- an entry is acknowledged (and deleted) once the dialer has handled it: the Originate sent (the contact is
  ``in_progress`` with this node's name: its outcome and its recovery are this node's), or the contact put
  back in line or closed by a check (calling hours, do-not-call, the outbound guard). A failure before that
  leaves it pending: this node reads its own pending entries again (the take succeeds again for the same node
  while the contact was not dialled), and if the node died, any node's XAUTOCLAIM pass moves entries idle
  longer than ``idle_s`` to itself. Nothing claimed is lost while one node lives;
- a reclaimed entry whose claim the dead node had taken but not dialled (not ``in_progress``) is taken over
  (the attempt key is set to the new node); the contact becomes ``in_progress`` only while the key still names
  the dialling node (``mark_in_progress``), so a node that was merely paused and resumes finds its claim gone
  (``TakenOver``) and does not dial.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from ..app.logutil import RateLimit
from ..store.campaign_work import WorkItem
from ..store.errors import StoreError

log = logging.getLogger(__name__)

IDLE_S = 30.0          # an entry read and not acknowledged for this long is its reader's no more (XAUTOCLAIM)
RECLAIM_EVERY_S = 5.0  # how often a node looks for such entries


class WorkStore(Protocol):
    """ivr.store.campaign_work.CampaignWorkStore, as the consumer uses it."""

    async def ensure_group(self, cid: str) -> None: ...

    async def read(self, cids: Sequence[str], consumer: str, count: int = 50, block_ms: int = 500,
                   own_pending: bool = False) -> list[WorkItem]: ...

    async def autoclaim(self, cid: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[WorkItem]: ...

    async def take(self, item: WorkItem, node: str, takeover: bool = False) -> tuple[str, str]: ...

    async def ack(self, item: WorkItem) -> None: ...


# (campaign id, contact n) -> dial it now on this node's Asterisk (or requeue/close it: Dialer.dial_claimed)
Dial = Callable[[str, str], Awaitable[None]]


class CampaignWork:
    """One node's consumer of the campaign work streams."""

    def __init__(self, store: WorkStore, node: str, dial: Dial, campaigns: Callable[[], Collection[str]],
                 ready: Callable[[], bool] = lambda: True, idle_s: float = IDLE_S,
                 reclaim_every: float = RECLAIM_EVERY_S, block_ms: int = 500) -> None:
        self.store, self.node, self._dial = store, node, dial
        self._campaigns = campaigns      # the running campaigns' ids
        self._ready = ready              # AMI up: nothing is read while this node cannot dial
        self.idle_s, self.reclaim_every, self.block_ms = idle_s, reclaim_every, block_ms
        self._groups: set[str] = set()
        self.counts = {"taken": 0, "done": 0, "stale": 0, "reclaimed": 0, "failed": 0}
        self.errors = 0
        self._unreachable = RateLimit(10.0)

    async def _cids(self) -> list[str]:
        cids = sorted(self._campaigns())
        for cid in cids:
            if cid not in self._groups:
                await self.store.ensure_group(cid)
                self._groups.add(cid)
        return cids

    async def handle(self, item: WorkItem, reclaimed: bool = False) -> str:
        """Take, dial and acknowledge one entry; returns what the take said (taken, done, stale). A dial that
        raises leaves the entry unacknowledged (read again: see the module docstring) and raises. A
        ``reclaimed`` entry (XAUTOCLAIM) whose claim another node took and never dialled is taken over."""
        verdict, holder = await self.store.take(item, self.node, takeover=reclaimed)
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        if verdict == "taken":
            try:
                await self._dial(item.cid, item.n)
            except Exception:
                self.counts["failed"] += 1
                raise
        elif verdict == "done":
            log.info("campaign %s: contact %s claim %d taken by %s already: skipped", item.cid, item.n,
                     item.attempt, holder)
        await self.store.ack(item)
        return verdict

    async def _handle_all(self, items: Sequence[WorkItem], reclaimed: bool = False) -> int:
        for item in items:
            await self.handle(item, reclaimed)
        return len(items)

    async def poll_once(self, own_pending: bool = False) -> int:
        """Read and handle what the group has for this node (new entries, or its own pending ones)."""
        cids = await self._cids()
        if not cids:
            return 0
        items = await self.store.read(cids, self.node, block_ms=self.block_ms, own_pending=own_pending)
        return await self._handle_all(items)

    async def reclaim_once(self) -> int:
        """XAUTOCLAIM every campaign's entries idle longer than ``idle_s`` (a dead node's) and handle them."""
        n = 0
        for cid in await self._cids():
            items = await self.store.autoclaim(cid, self.node, int(self.idle_s * 1000))
            if items:
                log.warning("campaign %s: %d claims idle for %.0fs taken over by %s", cid, len(items), self.idle_s,
                            self.node)
                self.counts["reclaimed"] += len(items)
            n += await self._handle_all(items, reclaimed=True)
        return n

    async def run(self) -> None:
        """Consume until cancelled: own pending entries first (a restart), then new ones, and an XAUTOCLAIM
        pass every ``reclaim_every`` seconds."""
        loop = asyncio.get_running_loop()
        own_pending, reclaimed_at = True, loop.time()
        while True:
            try:
                if not self._ready() or not self._campaigns():
                    await asyncio.sleep(0.2)
                    continue
                if await self.poll_once(own_pending=own_pending) == 0:
                    own_pending = False
                if loop.time() - reclaimed_at >= self.reclaim_every:
                    reclaimed_at = loop.time()
                    await self.reclaim_once()
                await asyncio.sleep(0)     # a read that came back at once (its own pending ones) yields too
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                self.errors += 1
                own_pending = True         # what failed half-way is read again from this node's pending list
                self._groups.clear()       # and the groups made again if Redis lost them (NOGROUP)
                self._unreachable.log(log, logging.WARNING, "campaign work: Redis unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)
            except Exception:
                self.errors += 1
                own_pending = True
                log.exception("campaign work: entry failed")
                await asyncio.sleep(1.0)

    def health(self) -> dict[str, object]:
        return {"consumer": self.node, **self.counts, "errors": self.errors}
