"""The live view model (``LiveView``) and one live picture a second, shared by every reader (``LiveFeed``).

``/api/v1/live`` and each dashboard's event stream used to build the picture themselves once a second (the
state snapshot, every campaign, the pending callbacks), so ten open dashboards cost ten times the Redis work
and the event loop time during a surge, when both are scarce. The picture is now built at most once per
``max_age`` and serialised once; whoever asks while it is being built waits for that same build. A reader
that goes away (a closed browser tab) never cancels a build the others wait for.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, Protocol

from ..agents.roster import Roster
from ..app.metrics import Metrics
from ..asterisk.state import CallCenterState
from ..balance.loop import BalanceLoop
from ..cluster.leader import Leadership

Picture = dict[str, Any]


class LiveFeed:
    """The newest live picture (and its JSON), rebuilt on demand when older than ``max_age`` seconds."""

    def __init__(self, build: Callable[[], Awaitable[Picture]], max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._build = build
        self.max_age = max_age
        self._clock = clock
        self._current: tuple[Picture, str] | None = None
        self._built_at = float("-inf")
        self._building: asyncio.Future[tuple[Picture, str]] | None = None
        self.builds = 0   # pictures built so far (for tests and curiosity)

    async def snapshot(self) -> tuple[Picture, str]:
        """The picture and its JSON text; built now only if the last one is ``max_age`` old."""
        if self._current is not None and self._clock() - self._built_at < self.max_age:
            return self._current
        if self._building is None:
            self._building = asyncio.ensure_future(self._refresh())
            self._building.add_done_callback(_consume)
        return await asyncio.shield(self._building)

    async def _refresh(self) -> tuple[Picture, str]:
        started = self._clock()
        try:
            picture = await self._build()
            self._current = (picture, json.dumps(picture))
            self._built_at = started
            self.builds += 1
            return self._current
        finally:
            self._building = None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a failed build's exception when every reader has gone (no "never retrieved" warning)."""
    if not fut.cancelled():
        fut.exception()


class AmiLink(Protocol):
    """Whether the AMI connection is up, and how often it came back (``AmiClient``)."""
    @property
    def connected(self) -> bool: ...

    reconnects: int


class CallerContext(Protocol):
    """What the IVR knew about each call in progress (``Continuity.context``: uid -> fields)."""
    context: dict[str, dict[str, Any]]


class PendingCallbacks(Protocol):
    async def pending_count(self) -> int: ...


class CampaignList(Protocol):
    async def list(self) -> list[dict[str, Any]]: ...


class LiveView:
    """The live view model: queues with estimates, agents with what they are doing, tiers, campaigns, callbacks
    pending, hourly history (``/api/v1/live``, the event stream, ``/api/v1/queues``, ``/api/v1/balance``),
    and the live gauges of ``/metrics``, refreshed from the same picture."""

    def __init__(self, state: CallCenterState, balance: BalanceLoop, roster: Roster, callers: CallerContext,
                 ami: AmiLink, metrics: Metrics, callbacks: PendingCallbacks, campaigns: CampaignList,
                 node: str, cluster: Leadership | None = None) -> None:
        self._cluster = cluster or Leadership.solo(node)
        self._state = state
        self._balance = balance
        self._roster = roster
        self._callers = callers
        self._ami = ami
        self._metrics = metrics
        self._callbacks = callbacks
        self._campaigns = campaigns
        self._node = node

    def queues(self) -> dict[str, Any]:
        """Queues from AMI: members and waiting callers."""
        return self._state.snapshot()

    def picture(self) -> Picture:
        """Everything the dashboard shows but Redis's part, in one JSON-ready dict (refreshes the live metrics)."""
        snap = self._state.snapshot()
        balance = self._balance
        decision = balance.last_decision
        for name, q in snap["queues"].items():
            est = decision.estimates.get(name) if decision else None
            q["estimated_wait"] = None if est is None or est == float("inf") else round(est, 1)
            q["overflow_open"] = bool(balance.tiers.get(name) and balance.tiers[name].open)
        context = self._callers.context
        for q in snap["queues"].values():
            for c in q["callers"]:
                known = context.get(c["uniqueid"])
                if known:
                    c["context"] = known
        self._metrics.update_live(snap, self._ami.connected, self._ami.reconnects, balance.actions_by_kind)
        agents = self._roster.describe()
        for a in agents:
            agent = self._roster.agents[a["id"]]
            ifaces = agent.interfaces
            live = [m for q in snap["queues"].values() for m in q["members"] if m["interface"] in ifaces]
            a["status"] = live[0]["status"] if live else "not in a queue"
            a["in_call"] = any(m["in_call"] for m in live)
            a["paused"] = any(m["paused"] for m in live)
            a["queues_now"] = sorted(n for n, q in snap["queues"].items()
                                     if any(m["interface"] in ifaces for m in q["members"]))
            a["device"] = self._state.devices.get(agent.interface, "")
            a["on_mobile"] = bool(agent.mobile_interface) and any(
                m["interface"] == agent.mobile_interface for m in live)
            talking = next((m.bridged for q in self._state.queues.values() for i in ifaces
                            if (m := q.members.get(i)) is not None and m.bridged), "")
            if talking:   # the caller this agent is talking to, with what the IVR knew about them
                a["caller"] = {"uniqueid": talking, **context.get(talking, {})}
        c = self._cluster
        return {"time": snap["time"], "node": self._node, "ami": self._ami.connected,
                "cluster": {"node": c.node, "leader": c.leader, "leading": c.is_leader, "token": c.token},
                "queues": snap["queues"], "agents": agents, "history": self._metrics.hourly()}

    async def snapshot(self) -> Picture:
        """What /api/v1/live answers and /api/v1/stream sends each second (built once a second for all:
        ``LiveFeed``)."""
        data = self.picture()
        data["callbacks_pending"] = await self._callbacks.pending_count()
        data["campaigns"] = await self._campaigns.list()
        return data

    def balance(self) -> dict[str, Any]:
        """The balancing loop: overflow tiers, wait estimates, desired membership, actions, policy."""
        b = self._balance
        d = b.last_decision
        return {
            "tiers": {q: {"open": t.open, "since": t.since} for q, t in b.tiers.items()},
            "estimates": {q: (None if w == float("inf") else round(w, 1))
                          for q, w in (d.estimates if d else {}).items()},
            "desired": {q: dict(m) for q, m in (d.desired if d else {}).items()},
            "actions": b.actions_by_kind, "ticks": b.ticks, "errors": b.errors,
            "policy": {k: getattr(b.policy, k) for k in b.policy.__dataclass_fields__},
        }

    def metrics_text(self) -> bytes:
        """The Prometheus exposition, with the live gauges refreshed first."""
        self.picture()
        return self._metrics.render()
