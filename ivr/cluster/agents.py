"""One logical queue across nodes: an agent on a call on one node is paused in the queues of the others.

app_queue knows only the device states of its own node, so without this node B rings an agent who is
talking on node A. Each node writes its agents' queue calls into one Redis hash (ivr/store/cluster.py) at
AgentConnect and removes them when the call ends; each change is announced on a pub/sub channel, and
every other node pauses that agent's members in its own queues (QueuePause, reason ``busy@<node>``) at
once, and unpauses them when the call ends. A reconcile every ``sync`` seconds covers what a message
cannot: a lost message (the hash is read again), this node's own entries (confirmed, rewritten after a
Redis failover, or removed when the call is gone) and a dead node's entries (removed by any node once
unconfirmed for ``stale`` seconds). Which pauses to send is decided by ivr/cluster/pauses.py (pure);
this module is the I/O around it. Nothing of this runs without ``cluster.enabled``.

The last line of defence is the SIP proxy's per-agent busy guard (docs/cluster.md, "One logical queue").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..asterisk.state import QueueState
from ..core import names as ev
from ..store.cluster import FREE, BusyEntry, BusyEvent
from .pauses import Key, MemberView, PauseAction, held_elsewhere, plan_pauses

log = logging.getLogger(__name__)

PENDING_S = 5.0        # a QueuePause whose QueueMemberPause has not come back is not sent again before this
RETRY_S = (0.5, 5.0)   # back-off of the subscription after Redis was lost (first, longest)


class AmiActions(Protocol):
    """The AMI client as this service uses it."""

    @property
    def connected(self) -> bool: ...

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *,
                     timeout: float | None = None) -> Any: ...


class LiveState(Protocol):
    """The live model of this node's queues and channels (``CallCenterState``)."""

    queues: dict[str, QueueState]
    channels: dict[str, dict[str, str]]


class BusyBoard(Protocol):
    """The shared busy state (``ivr.store.cluster.ClusterAgentStore``)."""

    async def set_busy(self, agent: str, node: str, uid: str) -> tuple[BusyEntry | None, BusyEntry]: ...
    async def set_free(self, agent: str, node: str, uid: str) -> bool: ...
    async def confirm(self, node: str, calls: Mapping[str, str], max_call_ms: int) -> dict[str, BusyEntry]: ...
    async def sweep(self, stale_ms: int, max_call_ms: int) -> dict[str, BusyEntry]: ...
    async def all(self) -> dict[str, BusyEntry]: ...
    async def listen(self, on_event: Callable[[BusyEvent], None],
                     on_subscribed: Callable[[], None] | None = None, poll: float = 1.0) -> None: ...


Agents = Callable[[], Iterable[tuple[str, Iterable[str]]]]   # (agent id, its member interfaces) of the roster


@dataclass(slots=True)
class LocalCall:
    """A queue call of one of our agents on this node."""

    uid: str              # the caller's channel
    agent_uid: str        # the agent's channel ("" unknown)


@dataclass(slots=True)
class Pending:
    """A QueuePause sent whose QueueMemberPause event has not come back yet."""

    paused: bool
    sent: float
    foreign: str | None = None   # a pause by someone else seen meanwhile: its reason
    restoring: bool = False      # the QueuePause puts someone else's pause (``foreign``) back


@dataclass(slots=True)
class Counters:
    pauses: int = 0
    unpauses: int = 0
    restored: int = 0
    errors: int = 0
    conflicts: int = 0
    swept: int = 0
    events: int = 0


class ClusterAgents:
    """This node's part of the shared agent busy state: announces its calls, holds the others' agents."""

    def __init__(self, node: str, board: BusyBoard, ami: AmiActions, state: LiveState, agents: Agents, *,
                 sync: float = 2.0, stale: float = 15.0, max_call: float = 4 * 3600.0,
                 on_pause: Callable[[], None] | None = None,
                 on_busy_elsewhere: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not stale > 2 * sync:
            raise ValueError(f"stale ({stale} s) must be above twice sync ({sync} s): a live node confirms its "
                             "entries every sync seconds and must get two tries before they count as stale")
        self.node, self.board, self.ami, self.state, self.agents = node, board, ami, state, agents
        self.sync, self.stale, self.max_call = sync, stale, max_call
        self.on_pause, self.on_busy_elsewhere = on_pause, on_busy_elsewhere
        self.clock = clock
        self.busy: dict[str, BusyEntry] = {}          # the shared hash as last seen (every node's agents)
        self.local: dict[str, LocalCall] = {}         # agent -> their queue call on this node
        self.ours: frozenset[Key] = frozenset()       # members this node holds paused for a call elsewhere
        self.pending: dict[Key, Pending] = {}
        self.restore: dict[Key, str] = {}             # foreign pauses our QueuePause overwrote: to put back
        self.counters = Counters()
        self._index: dict[str, str] = {}              # member interface -> agent id
        self._writes: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._wake = asyncio.Event()     # plan the pauses again now
        self._reread = asyncio.Event()   # reconcile now (the subscription holds again)
        self.subscribed = asyncio.Event()

    # ------------------------------------------------------------------ reading
    def busy_elsewhere(self) -> dict[str, str]:
        """Agents on a call on another node: agent -> that node."""
        return {agent: e.node for agent, e in self.busy.items() if e.node != self.node}

    def agent_of(self, interface: str) -> str | None:
        agent = self._index.get(interface)
        if agent is None:
            self._reindex()
            agent = self._index.get(interface)
        return agent

    def _reindex(self) -> None:
        self._index = {iface: agent for agent, ifaces in self.agents() for iface in ifaces}

    def describe(self) -> dict[str, Any]:
        c = self.counters
        return {"node": self.node, "busy_elsewhere": self.busy_elsewhere(), "local_calls": sorted(self.local),
                "held": sorted(f"{q} {i}" for q, i in self.ours), "subscribed": self.subscribed.is_set(),
                "pauses": c.pauses, "unpauses": c.unpauses, "restored": c.restored, "errors": c.errors,
                "conflicts": c.conflicts, "swept": c.swept}

    # --------------------------------------------------------------- AMI events
    def on_event(self, e: Mapping[str, Any]) -> None:
        """Feed every AMI event of this node (after the live state applied it); never blocks."""
        kind = e.get("Event")
        if kind == ev.AGENT_CONNECT:
            agent = self.agent_of(str(e.get("Interface") or ""))
            uid = str(e.get("Uniqueid") or "")
            if agent is not None and uid:
                self.local[agent] = LocalCall(uid, str(e.get("DestUniqueid") or ""))
                self._writes.put_nowait(("busy", agent, uid))
        elif kind == ev.AGENT_COMPLETE:
            agent = self.agent_of(str(e.get("Interface") or ""))
            call = self.local.get(agent) if agent is not None else None
            if agent is not None and call is not None and call.uid == e.get("Uniqueid"):
                self._end(agent, call)
        elif kind == ev.HANGUP:
            gone = e.get("Uniqueid")
            for agent, call in list(self.local.items()):
                if gone and gone in (call.uid, call.agent_uid):
                    self._end(agent, call)
        elif kind == ev.QUEUE_MEMBER_PAUSE:
            self._on_pause_event(e)
            self._wake.set()
        elif kind in (ev.QUEUE_MEMBER_ADDED, ev.QUEUE_MEMBER_REMOVED):
            self._wake.set()

    def _end(self, agent: str, call: LocalCall) -> None:
        del self.local[agent]
        self._writes.put_nowait(("free", agent, call.uid))

    def _on_pause_event(self, e: Mapping[str, Any]) -> None:
        """Our QueuePause coming back, or someone else's. A pause by someone else that lands while ours is on
        the way was overwritten by ours if ours comes after it (app_queue keeps one reason): put it back."""
        key = (str(e.get("Queue") or ""), str(e.get("Interface") or ""))
        p = self.pending.get(key)
        if p is None:
            return
        paused = str(e.get("Paused", "")).strip().lower() in ("1", "true", "yes")
        reason = str(e.get("PausedReason") or e.get("Reason") or "")
        if p.restoring:   # the member is someone else's from here: nothing of ours is on the way once it shows
            if paused and not held_elsewhere(paused, reason):
                del self.pending[key]
            return
        if paused and not held_elsewhere(paused, reason):
            p.foreign = reason
            return
        if paused != p.paused:
            return   # someone unpaused while our pause is on the way: ours lands after it
        del self.pending[key]
        if p.foreign is not None:
            self.restore[key] = p.foreign
            self.ours = self.ours - {key}

    def resync(self) -> None:
        """After an AMI (re)connect and the live state's resync: calls that ended meanwhile are gone, calls
        that started meanwhile are found from the channels (an agent's channel in a call with a caller)."""
        self._reindex()
        self.pending.clear()
        for agent, call in list(self.local.items()):
            if call.uid not in self.state.channels:
                self._end(agent, call)
        in_call = {m.interface for q in self.state.queues.values() for m in q.members.values() if m.in_call}
        for uid, ch in self.state.channels.items():
            iface = ch.get("channel", "").rpartition("-")[0]
            member_of = self._index.get(iface) if iface in in_call else None
            linked = ch.get("linkedid", "")
            if member_of is not None and member_of not in self.local and linked and linked != uid:
                self.local[member_of] = LocalCall(linked, uid)
                self._writes.put_nowait(("busy", member_of, linked))
        self._wake.set()

    # ----------------------------------------------------------- shared state
    def _on_busy_event(self, event: BusyEvent) -> None:
        self.counters.events += 1
        if event.kind == FREE:
            cur = self.busy.get(event.agent)
            if cur is not None and (cur.node, cur.uid) == (event.entry.node, event.entry.uid):   # not a newer call
                del self.busy[event.agent]
        else:
            self.busy[event.agent] = event.entry
        if event.entry.node != self.node:
            self._wake.set()

    async def _write(self, op: str, agent: str, uid: str) -> None:
        if op == "busy":
            prev, _ = await self.board.set_busy(agent, self.node, uid)
            if prev is not None and prev.node != self.node:
                self.counters.conflicts += 1
                log.warning("agent %s connected to %s on %s while on %s's call %s", agent, uid, self.node,
                            prev.node, prev.uid)
        else:
            await self.board.set_free(agent, self.node, uid)

    async def reconcile(self) -> None:
        """Confirm this node's calls, remove stale entries (a dead node's), read the whole hash again."""
        max_ms = int(self.max_call * 1000)
        if self.ami.connected:   # without AMI this node cannot tell its calls: its entries age out
            others = await self.board.confirm(self.node, {a: c.uid for a, c in self.local.items()}, max_ms)
            for agent, entry in others.items():
                self.counters.conflicts += 1
                log.warning("agent %s is on a call on %s (%s) and on %s (%s)", agent, self.node,
                            self.local[agent].uid if agent in self.local else "?", entry.node, entry.uid)
        swept = await self.board.sweep(int(self.stale * 1000), max_ms)
        for agent, entry in swept.items():
            self.counters.swept += 1
            log.warning("agent %s: call %s on %s not confirmed for %.0f s (node down?): entry removed", agent,
                        entry.uid, entry.node, self.stale)
        self.busy = await self.board.all()
        self._wake.set()

    # ------------------------------------------------------------------ pauses
    def members(self) -> list[MemberView]:
        """This node's queue members that stand for an agent of the roster."""
        self._reindex()
        out = []
        for q in self.state.queues.values():
            for m in q.members.values():
                agent = self._index.get(m.interface)
                if agent is not None:
                    out.append(MemberView(q.name, m.interface, agent, m.paused, m.paused_reason))
        return out

    async def apply(self) -> list[PauseAction]:
        """Plan and send the QueuePause actions the shared state calls for now; returns those sent."""
        if not self.ami.connected:
            return []
        now = self.clock()
        self.pending = {k: p for k, p in self.pending.items() if now - p.sent < PENDING_S}
        elsewhere = self.busy_elsewhere()
        if self.on_busy_elsewhere is not None:
            self.on_busy_elsewhere(len(elsewhere))
        sent: list[PauseAction] = []
        for key, reason in list(self.restore.items()):
            del self.restore[key]
            if await self._send(PauseAction(key[0], key[1], "", True, reason, "put back"), now, restoring=True):
                self.counters.restored += 1
                log.warning("cluster: %s %s: a pause (%r) overwritten by ours put back", key[0], key[1], reason)
        plan = plan_pauses(elsewhere, self.members(), self.ours)
        for key in plan.adopted:
            log.info("cluster: %s %s held for a call elsewhere (paused before this controller started)", *key)
        ours = {k for k in plan.ours if not (k in self.pending and self.pending[k].restoring)}
        for action in plan.actions:
            if action.key in self.pending or action.key in self.restore:
                continue
            if await self._send(action, now):
                sent.append(action)
                if action.paused:
                    self.counters.pauses += 1
                    if self.on_pause is not None:
                        self.on_pause()
                else:
                    self.counters.unpauses += 1
            elif action.paused:
                ours.discard(action.key)
        self.ours = frozenset(ours)
        return sent

    async def _send(self, a: PauseAction, now: float, restoring: bool = False) -> bool:
        fields = {"Queue": a.queue, "Interface": a.interface, "Paused": "true" if a.paused else "false"}
        if a.paused and a.reason:
            fields["Reason"] = a.reason
        # until its event shows, the member is not planned for again (the live state does not show it yet)
        self.pending[a.key] = Pending(a.paused, now, foreign=a.reason if restoring else None, restoring=restoring)
        try:
            await self.ami.action(ev.QUEUE_PAUSE, fields)
        except Exception as exc:   # AmiError: the member left the queue meanwhile, or AMI is down
            self.pending.pop(a.key, None)
            if "not there" not in str(exc).lower() and "not found" not in str(exc).lower():
                self.counters.errors += 1
                log.warning("cluster: QueuePause %s %s %s failed: %s", a.queue, a.interface, a.paused, exc)
            return False
        log.info("cluster: %s %s %s (%s)", "pause" if a.paused else "unpause", a.queue, a.interface, a.why)
        return True

    # ------------------------------------------------------------------- tasks
    async def run(self) -> None:
        """The subscriber, the writer, the reconcile and the pauses, until cancelled."""
        tasks = [asyncio.create_task(self._listen(), name="cluster-agents-listen"),
                 asyncio.create_task(self._writer(), name="cluster-agents-write"),
                 asyncio.create_task(self._reconciler(), name="cluster-agents-reconcile"),
                 asyncio.create_task(self._applier(), name="cluster-agents-pause")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        delay = RETRY_S[0]
        while True:
            try:
                await self.board.listen(self._on_busy_event, on_subscribed=self._subscribed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("cluster: agent events lost (%s): subscribing again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])
            else:
                delay = RETRY_S[0]

    def _subscribed(self) -> None:
        self.subscribed.set()
        self._reread.set()   # read the hash at once: what changed before the subscription held is in it

    async def _writer(self) -> None:
        while True:
            op, agent, uid = await self._writes.get()
            try:
                await self._write(op, agent, uid)
            except Exception as exc:   # Redis away: the reconcile writes (or removes) it again
                self.counters.errors += 1
                log.warning("cluster: agent %s %s (call %s) not written: %s", agent, op, uid, exc)

    async def _reconciler(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.errors += 1
                log.warning("cluster: agent busy state not reconciled: %s", exc)
            try:
                await asyncio.wait_for(self._reread.wait(), self.sync)
            except asyncio.TimeoutError:
                pass
            self._reread.clear()

    async def _applier(self) -> None:
        while True:
            try:
                await self.apply()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters.errors += 1
                log.exception("cluster: pausing agents busy elsewhere failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.sync)
            except asyncio.TimeoutError:
                pass
