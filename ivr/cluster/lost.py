"""The leader's sweep of lost nodes: their waiting callers become callbacks, in their original order.

When a node is lost (ivr/cluster/nodes.py: no heartbeat for ``node_ttl``, or no Asterisk under it for as
long) the callers who were waiting in its queues are cut off: SIP cannot move a call to another machine. They
were in its register (ivr/cluster/waiting.py) with their place, so the leader moves each of them into the
callback line (the same records and zset ``CallbackStore`` keeps) scored by that place: the dispatcher calls
them back ahead of everyone who joined after them, through the outbound guard as every callback.

The move is one fenced Lua script per batch of a node's callers (ivr/store/cluster.py): an old leader that
lost its lease gets ``Fenced`` and writes nothing, and a marker key per caller makes a repeated sweep, or a
second leader's, create no second callback. A caller without a usable number (withheld) cannot be called
back: counted and logged as such.

The same pass settles the campaign attempts a lost node left ``in_progress`` (``settle_attempts``, the
dialer's ``settle_lost``, fenced too): no outcome will come from that node, and without this they would stay
leased until it restarts. An attempt whose callee's choice was recorded ends with it; any other is closed as
``node_lost`` and never dialled again (the call went out and may have been answered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..store.cluster_nodes import Moved
from ..store.errors import StoreError
from ..store.leader import Fenced
from .nodes import lost_nodes, parse_beats

log = logging.getLogger(__name__)

BATCH = 200                 # callers moved by one script (one Redis step: short, so nothing else waits long)
FORGET_AFTER_S = 86400.0    # a node silent this long, with nothing left in its register, leaves the heartbeats


class LostStore(Protocol):
    """``ivr.store.cluster_nodes.ClusterStore``'s part the sweep uses."""
    async def nodes(self) -> dict[str, str]: ...
    async def waiting(self, node: str, count: int = 1000) -> list[tuple[str, float]]: ...
    async def move_to_callbacks(self, holder: str, node: str, uids: Sequence[str], now: float) -> list[Moved]: ...
    async def forget_node(self, node: str) -> bool: ...


class Leading(Protocol):
    """``ivr.cluster.leader.Leadership``: whether this node leads, and its fencing holder string."""
    @property
    def is_leader(self) -> bool: ...
    holder: str


def in_join_order(entries: Iterable[tuple[str, float]]) -> list[str]:
    """The uids of register entries ((uid, place)) oldest place first; equal places by uid, as Asterisk makes
    them ("<epoch>.<sequence>", after the node's name on a node of a cluster: 1800000003.9 before 1800000003.10),
    so every sweep, on any leader, moves them in one and the same order."""
    return [uid for uid, _ in sorted(entries, key=lambda e: (e[1], _uid_key(e[0])))]


def _uid_key(uid: str) -> tuple[int, int, int, str]:
    head, _, tail = uid.rpartition("-")[2].partition(".")
    if head.isdigit() and (tail.isdigit() or not tail):
        return (0, int(head), int(tail or 0), uid)
    return (1, 0, 0, uid)     # not an Asterisk uid: after those, by its text


def batches(uids: Sequence[str], size: int = BATCH) -> list[list[str]]:
    return [list(uids[i:i + size]) for i in range(0, len(uids), size)]


@dataclass(slots=True)
class NodeSweep:
    """What one sweep did with one lost node's register."""

    node: str
    reason: str
    moved: list[Moved] = field(default_factory=list)      # callbacks made now
    before: int = 0                                       # moved already (another sweep, another leader)
    anonymous: list[str] = field(default_factory=list)    # uids without a number: not called back

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "reason": self.reason, "callbacks": [m.callback_id for m in self.moved],
                "moved_before": self.before, "anonymous": len(self.anonymous)}


class LostNodeSweep:
    """Runs on every node; acts only while this node leads."""

    def __init__(self, store: LostStore, leadership: Leading, node: str, *, ttl: float, every: float,
                 on_callback: Callable[[Moved, str], None] | None = None,
                 on_anonymous: Callable[[str, str], None] | None = None,
                 settle_attempts: Callable[[str, frozenset[str]], Awaitable[int]] | None = None,
                 clock: Callable[[], float] = time.time, batch: int = BATCH) -> None:
        self.store, self.leadership, self.node = store, leadership, node
        self.ttl, self.every = ttl, every
        self.on_callback = on_callback      # told (moved, lost node) of each callback made
        self.on_anonymous = on_anonymous    # told (uid, lost node) of each caller who cannot be called back
        # (holder, lost nodes) -> campaign attempts those nodes left in progress, settled (Dialer.settle_lost)
        self.settle_attempts = settle_attempts
        self.attempts_settled = 0
        self.clock = clock
        self.batch = batch
        self.sweeps = 0
        self.callbacks = 0
        self.anonymous = 0
        self.fenced = 0
        self.errors = 0
        self.last: list[dict[str, Any]] = []

    async def sweep(self) -> list[NodeSweep]:
        """One pass, if this node leads: every lost node's register moved into callbacks. Raises ``Fenced``
        when the lease passed to another node meanwhile (what was moved before that stays moved)."""
        if not self.leadership.is_leader:
            return []
        now = self.clock()
        beats = parse_beats(await self.store.nodes())
        done = []
        lost = lost_nodes(beats, now, self.ttl, self.node)
        for node, reason in sorted(lost.items()):
            result = await self.sweep_node(node, reason, now)
            if result.moved or result.anonymous or result.before:
                done.append(result)
            elif reason and beats[node].age(now) > FORGET_AFTER_S and await self.store.forget_node(node):
                log.info("node %s silent for %.0f h: forgotten", node, beats[node].age(now) / 3600)
        if lost and self.settle_attempts is not None and self.leadership.is_leader:
            self.attempts_settled += await self.settle_attempts(self.leadership.holder, frozenset(lost))
        self.sweeps += 1
        if done:
            self.last = [d.as_dict() for d in done]
        return done

    async def sweep_node(self, node: str, reason: str, now: float) -> NodeSweep:
        """Move ``node``'s register into callbacks, a batch at a time, oldest place first."""
        out = NodeSweep(node, reason)
        while True:
            if not self.leadership.is_leader:   # stepped down meanwhile: the next leader goes on from here
                break
            entries = await self.store.waiting(node, self.batch)
            if not entries:
                break
            moved = await self.store.move_to_callbacks(self.leadership.holder, node, in_join_order(entries), now)
            for m in moved:
                self._note(out, m)
            if len(entries) < self.batch or not moved:
                break
        if out.moved or out.anonymous:
            log.warning("node %s lost (%s): %d waiting callers made callbacks at their places, %d without a "
                        "number could not be", node, _why(reason), len(out.moved), len(out.anonymous))
        return out

    def _note(self, out: NodeSweep, m: Moved) -> None:
        if m.what == "moved":
            out.moved.append(m)
            self.callbacks += 1
            log.info("call %s: waiting in %s on lost node %s since %.0f: callback %s keeps that place", m.uid,
                     m.queue, out.node, m.place, m.callback_id)
            if self.on_callback is not None:
                self.on_callback(m, out.node)
        elif m.what == "anonymous":
            out.anonymous.append(m.uid)
            self.anonymous += 1
            log.warning("call %s: waiting in %s on lost node %s without a number to call (withheld caller ID, "
                        "or a campaign contact not found): cannot be called back", m.uid, m.queue, out.node)
            if self.on_anonymous is not None:
                self.on_anonymous(m.uid, out.node)
        else:
            out.before += 1

    async def run(self) -> None:
        """Sweep every ``every`` seconds until cancelled; errors are logged and the next pass tries again."""
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Fenced as exc:
                self.fenced += 1
                log.warning("lost-node sweep refused: this node no longer leads (%s)", exc)
            except (StoreError, OSError) as exc:
                self.errors += 1
                log.warning("lost-node sweep: Redis unreachable (%s)", exc)
            except Exception:
                self.errors += 1
                log.exception("lost-node sweep failed")

    def describe(self) -> dict[str, Any]:
        return {"sweeps": self.sweeps, "callbacks": self.callbacks, "anonymous": self.anonymous,
                "attempts_settled": self.attempts_settled,
                "fenced": self.fenced, "errors": self.errors, "last": self.last}


def _why(reason: str) -> str:
    return {"silent": "no heartbeat", "asterisk": "its Asterisk unreachable"}.get(reason, reason)


def callback_event(m: Moved, node: str) -> dict[str, Any]:
    """The ``callback.requested`` payload of a lost node's caller made a callback."""
    return {"id": m.callback_id, "number": m.number, "queue": m.queue, "lang": m.lang, "call_uid": m.uid,
            "place": m.place, "status": "pending", "source": "node_lost", "node": node}
