"""Node heartbeats: which nodes of the cluster are alive, and which are lost with their waiting callers.

Every node writes ``{at, api, started, ami, ami_down_since}`` into one Redis hash every ``cluster.heartbeat``
seconds and reads everyone's in the same round trip. A node is *lost* when its heartbeat is older than
``cluster.node_ttl`` (the machine or its controller died), or when it still beats but has not reached its
Asterisk for ``node_ttl`` (Asterisk died under it): either way the callers waiting in its queues are gone
with it, and the leader turns them into callbacks (ivr/cluster/lost.py).

Ages are judged on the reader's clock against the writer's: nodes keep their clocks in sync (NTP); a skew
adds to, or takes from, ``node_ttl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..app.logutil import RateLimit

log = logging.getLogger(__name__)

SILENT = "silent"        # no heartbeat for node_ttl
NO_ASTERISK = "asterisk"  # beats, but its AMI has been down for node_ttl


class HeartbeatStore(Protocol):
    """``ivr.store.cluster_nodes.ClusterStore``'s heartbeat part."""
    async def heartbeat(self, node: str, info: Mapping[str, Any]) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Beat:
    """One node's last heartbeat."""

    node: str
    at: float
    api: str = ""
    started: float = 0.0
    ami: bool = True
    ami_down_since: float = 0.0

    @classmethod
    def parse(cls, node: str, raw: str | None) -> "Beat | None":
        """A heartbeat from its JSON; None when it is not one (damaged data is ignored, never fatal)."""
        try:
            d = json.loads(raw or "")
            return cls(node, float(d["at"]), str(d.get("api") or ""), float(d.get("started") or 0.0),
                       bool(d.get("ami", True)), float(d.get("ami_down_since") or 0.0))
        except (ValueError, TypeError, KeyError):
            return None

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def as_dict(self, now: float, ttl: float) -> dict[str, Any]:
        return {"node": self.node, "api": self.api, "age": round(self.age(now), 1), "alive": self.age(now) <= ttl,
                "started": self.started, "ami": self.ami, "lost": lost_reason(self, now, ttl) or None}


def lost_reason(beat: Beat, now: float, ttl: float) -> str:
    """Why ``beat``'s node counts as lost ('' while it is not): ``silent`` (no heartbeat for ``ttl``) or
    ``asterisk`` (its controller beats but has not reached its Asterisk for ``ttl``)."""
    if beat.age(now) > ttl:
        return SILENT
    if not beat.ami and beat.ami_down_since and now - beat.ami_down_since > ttl:
        return NO_ASTERISK
    return ""


def parse_beats(raw: Mapping[str, str]) -> dict[str, Beat]:
    out = {}
    for node, value in raw.items():
        beat = Beat.parse(node, value)
        if beat is not None:
            out[node] = beat
    return out


def lost_nodes(beats: Mapping[str, Beat], now: float, ttl: float, me: str) -> dict[str, str]:
    """The lost nodes (node -> reason). This node is never lost for silence (it is running this code: a
    heartbeat it failed to write is Redis's problem, not a death), but it is when its own Asterisk is gone."""
    out = {}
    for node, beat in beats.items():
        why = lost_reason(beat, now, ttl)
        if why and not (node == me and why == SILENT):
            out[node] = why
    return out


class NodeHeartbeats:
    """This node's heartbeat writer and everyone's heartbeats as last read."""

    def __init__(self, store: HeartbeatStore, node: str, *, api: str, every: float, ttl: float,
                 ami_connected: Callable[[], bool], clock: Callable[[], float] = time.time,
                 started: float | None = None) -> None:
        self.store, self.node, self.api = store, node, api
        self.every, self.ttl = every, ttl
        self.ami_connected = ami_connected
        self.clock = clock
        self.started = clock() if started is None else started
        self.ami_down_since = 0.0
        self.beats: dict[str, Beat] = {}
        self.read_at = 0.0        # when ``beats`` was read (this node's clock)
        self.written = 0
        self.errors = 0
        self._unreachable = RateLimit(10.0)

    def info(self, now: float) -> dict[str, Any]:
        """This node's heartbeat now (and the AMI outage clock: it starts at the first beat that sees AMI down)."""
        up = self.ami_connected()
        if up:
            self.ami_down_since = 0.0
        elif not self.ami_down_since:
            self.ami_down_since = now
        return {"at": round(now, 3), "api": self.api, "started": round(self.started, 3), "ami": up,
                "ami_down_since": round(self.ami_down_since, 3)}

    async def beat(self) -> dict[str, Beat]:
        """Write this node's heartbeat and read everyone's (raises the store's errors)."""
        now = self.clock()
        raw = await self.store.heartbeat(self.node, self.info(now))
        self.beats = parse_beats(raw)
        self.read_at = now
        self.written += 1
        return self.beats

    async def run(self) -> None:
        """Beat every ``every`` seconds until cancelled; a Redis outage is logged (rate-limited) and retried."""
        while True:
            try:
                await asyncio.wait_for(self.beat(), timeout=max(self.every, 0.5))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                self._unreachable.log(log, logging.WARNING, "heartbeat of node %s not written (%s)", self.node, exc)
            await asyncio.sleep(self.every)

    # ------------------------------------------------------------ reading
    def alive(self, now: float | None = None) -> list[str]:
        """Nodes whose heartbeat is younger than ``ttl`` (this one included), sorted."""
        now = self.clock() if now is None else now
        return sorted(n for n, b in self.beats.items() if b.age(now) <= self.ttl)

    def dead(self, now: float | None = None) -> list[str]:
        """Nodes whose heartbeat is older than ``ttl`` (never this one), sorted."""
        now = self.clock() if now is None else now
        return sorted(n for n, b in self.beats.items() if b.age(now) > self.ttl and n != self.node)

    def others_alive(self, now: float | None = None) -> list[str]:
        """The other nodes that are alive and reach their Asterisk (whose waiting callers are real)."""
        now = self.clock() if now is None else now
        lost = lost_nodes(self.beats, now, self.ttl, self.node)
        return [n for n in self.alive(now) if n != self.node and n not in lost]

    def may_lead(self, now: float | None = None) -> bool:
        """False while this node's own Asterisk has been out of reach for ``ttl`` (it counts as lost) and another
        node is alive with its Asterisk: the leader's balancing loop, callback dispatch and pacer act through
        AMI, so a leader without Asterisk would leave the whole cluster without them. Alone, it leads on (its
        sweep still turns its own lost callers into callbacks)."""
        now = self.clock() if now is None else now
        lost_here = bool(self.ami_down_since) and now - self.ami_down_since > self.ttl
        return not (lost_here and self.others_alive(now))

    def describe(self) -> dict[str, Any]:
        """For /health: every node seen, its heartbeat's age, whether it is alive or lost."""
        now = self.clock()
        return {"node": self.node, "heartbeat": self.every, "node_ttl": self.ttl, "written": self.written,
                "errors": self.errors, "read_age": round(now - self.read_at, 1) if self.read_at else None,
                "nodes": [b.as_dict(now, self.ttl) for _, b in sorted(self.beats.items())]}
