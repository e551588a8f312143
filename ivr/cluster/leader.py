"""One balancing leader at a time: a lease in Redis with a fencing token (the store: ivr/store/leader.py).

Every node runs ``Leadership.run()``. A node without the lease tries to take it every ``renew`` seconds; the
leader renews it as often. The leader holds its leadership locally only until ``lease_ttl`` after it *sent*
its last successful renewal, minus a margin for clock drift: by then the lease may have run out in Redis and
another node may lead, so it steps down first. Its writes are fenced anyway (``LeaderStore.eval_fenced``), so
even a leader paused past that instant cannot overwrite the new leader's decisions.

Without a cluster (``cluster.enabled: false``) ``Leadership.solo`` leads for good, with an empty holder:
fenced writes then go ahead unchecked, as nobody else can lead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

DRIFT = 0.9   # a leader counts on 90 % of its lease: clocks of two machines do not run at exactly one rate


class NotLeader(RuntimeError):
    """A leader's write was asked of a node that does not lead now."""


class LeaseStore(Protocol):
    async def acquire(self, node: str, ttl_ms: int) -> tuple[bool, str]: ...
    async def renew(self, holder: str, ttl_ms: int) -> bool: ...
    async def release(self, holder: str) -> bool: ...


class Leadership:
    """Whether this node leads now, its fencing holder string, and listeners told at each change."""

    def __init__(self, node: str, store: LeaseStore | None, ttl: float = 3.0, renew: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, *, eligible: Callable[[], bool] | None = None) -> None:
        self.node, self.store, self.ttl, self.renew_every = node, store, ttl, renew
        self.clock = clock
        # whether this node may lead now (None: always): a node that cannot act (its Asterisk gone) while
        # another can gives the lease back and does not take it again until it may
        self.eligible = eligible
        self.stepped_down = 0
        self.holder = ""
        self.leader = node if store is None else ""   # the node that leads, as last seen ("" unknown)
        self.valid_until = float("inf") if store is None else 0.0
        self.changes = 0
        self.errors = 0
        self._listeners: list[Callable[[bool], None]] = []

    @classmethod
    def solo(cls, node: str) -> "Leadership":
        return cls(node, None)

    @property
    def clustered(self) -> bool:
        return self.store is not None

    @property
    def is_leader(self) -> bool:
        return self.clock() < self.valid_until

    @property
    def token(self) -> int:
        """The fencing token of this node's lease (0 while it does not lead, and for a single node)."""
        head = self.holder.split(":", 1)[0]
        return int(head) if head.isdigit() else 0

    def fence(self) -> str:
        """The holder string a fenced write of this node's must carry: its lease while it leads, "" for a
        single node (nobody else can lead: unchecked). Raises ``NotLeader`` on a clustered node that does not
        lead: it must not write a leader's decision at all."""
        if self.store is None:
            return ""
        if not self.holder or not self.is_leader:
            raise NotLeader(f"node {self.node} does not lead (leader: {self.leader or 'unknown'})")
        return self.holder

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """``listener(True)`` when this node starts leading, ``listener(False)`` when it stops."""
        self._listeners.append(listener)

    def _set(self, leading: bool, holder: str = "") -> None:
        was = bool(self.holder)
        self.holder = holder if leading else ""
        if not leading:
            self.valid_until = 0.0
        if leading != was:
            self.changes += 1
            log.warning("node %s %s (lease %s)", self.node, "leads" if leading else "no longer leads",
                        holder or "-")
            for listener in self._listeners:
                try:
                    listener(leading)
                except Exception:
                    log.exception("leadership listener failed")

    async def step(self) -> bool:
        """One try: renew the lease if held, else try to take it. Returns whether this node leads."""
        if self.store is None:
            return True
        if self.eligible is not None and not self.eligible():
            if self.holder:
                self.stepped_down += 1
                log.warning("node %s cannot act (its Asterisk is out of reach) while another node can: it "
                            "gives the lease back", self.node)
                await self.resign()
            return False
        ttl_ms = int(self.ttl * 1000)
        sent = self.clock()
        try:
            if self.holder:
                if await self.store.renew(self.holder, ttl_ms):
                    self.valid_until = sent + self.ttl * DRIFT
                    return True
                self._set(False)
            granted, holder = await self.store.acquire(self.node, ttl_ms)
        except Exception as exc:   # Redis away (a failover): lead on until the local lease runs out
            self.errors += 1
            log.debug("lease: %s", exc)
            if self.holder and not self.is_leader:
                self._set(False)
            return self.is_leader
        self.leader = holder.split(":", 1)[1] if ":" in holder else ""
        if granted:
            self.valid_until = sent + self.ttl * DRIFT
            self._set(True, holder)
        return self.is_leader

    async def run(self, release: bool = True) -> None:
        """Renew or try every ``renew`` seconds until cancelled; resign on the way out (``release``: give the
        lease back; without it the lease runs out by itself, as when the process dies)."""
        try:
            while True:
                try:   # a Redis that hangs (a failover under way) must not hold leadership past its lease
                    await asyncio.wait_for(self.step(), timeout=self.renew_every)
                except asyncio.TimeoutError:
                    self.errors += 1
                    if self.holder and not self.is_leader:
                        self._set(False)
                    continue
                await asyncio.sleep(self.renew_every)
        finally:
            if release:
                await self.resign()
            elif self.holder:
                self._set(False)

    async def resign(self) -> None:
        """Give the lease back (a clean stop hands over at once rather than after the TTL)."""
        if self.store is not None and self.holder:
            holder = self.holder
            self._set(False)
            try:
                await self.store.release(holder)
            except Exception as exc:
                log.debug("lease not released: %s", exc)

    def describe(self) -> dict[str, object]:
        return {"node": self.node, "leader": self.leader, "leading": self.is_leader, "token": self.token,
                "clustered": self.clustered, "changes": self.changes}
