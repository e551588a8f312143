"""The live balancing loop: snapshot -> decide() -> apply, about once a second.

A thin shell around the pure policy. It builds a ``Snapshot`` from the live
state (AMI) and the roster (read from Redis at start, held in memory), calls
``decide()``, and applies the actions
over AMI by reconciling desired against actual membership: an action is only
sent for a difference, a member just added is not added again while its
QueueMemberAdded event is on the way, and nothing runs until AMI has resynced
after a (re)connect. Every action is logged with its reason and counted.

In a cluster only the balancing leader applies actions (``leadership``, ivr/cluster/leader.py). Each action
is safe to send twice (a new leader may repeat what the old one sent just before it died): QueuePenalty sets a
value; QueueAdd of a member already there and QueueRemove of one not there fail harmlessly and are skipped
below; pauses are QueuePause with an explicit ``Paused`` (ivr/agents/service.py), never a toggle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections import deque
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from ..store.errors import StoreError

from ..core import names as ev
from ..asterisk.ami_client import AmiClient, AmiError
from ..app.config import Config
from ..app.logutil import RateLimit
from ..agents.roster import Roster
from ..asterisk.state import CallCenterState
from ..cluster.leader import Leadership, NotLeader
from ..store.leader import Fenced
from .policy import (Action, AgentView, CallbackView, CampaignView, Decision, Policy, QueueView, Snapshot,
                     TierState, decide, desired_members, membership_actions)

log = logging.getLogger(__name__)
UNREACHABLE_STATES = frozenset({"UNAVAILABLE", "INVALID"})

SL_WINDOW_S = 1800.0
PENDING_S = 5.0
MOBILE_RECHECK_S = 60.0   # agents' mobiles are checked against the outbound guard this often (DNC, config)

CallbackDispatch = Callable[[str, str], Awaitable[None]]


class SharedTiers(Protocol):
    """Where a cluster's leader publishes its overflow tiers (fenced) and followers read them
    (ivr.store.leader.LeaderStore)."""

    async def publish_tiers(self, holder: str, tiers_json: str, node: str) -> None: ...

    async def tiers(self) -> str: ...


def tiers_to_json(tiers: Mapping[str, TierState]) -> str:
    return json.dumps({q: {"open": t.open, "since": t.since} for q, t in sorted(tiers.items())})


def tiers_from_json(raw: str) -> dict[str, TierState]:
    """The published tiers; {} for none or a damaged value."""
    try:
        data = json.loads(raw) if raw else {}
        return {str(q): TierState(bool(t["open"]), float(t["since"])) for q, t in data.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _due(value: Any) -> float:
    """A callback's promised time (epoch seconds); none or unreadable: never urgent (inf)."""
    try:
        due = float(value) if value not in (None, "") else math.inf
    except (TypeError, ValueError):
        return math.inf
    return due if due == due else math.inf


def policy_from(cfg: Config) -> Policy:
    b = cfg.balance
    return Policy(open_wait_s=b.open_wait_s, open_sl=b.open_sl, close_wait_s=b.close_wait_s, close_sl=b.close_sl,
                  min_open_s=b.min_open_s, sl_min_calls=b.sl_min_calls, simple_queues=tuple(b.simple_queues),
                  volunteer_penalty=b.volunteer_penalty, max_callbacks_in_flight=b.max_callbacks_in_flight)


class BalanceLoop:
    """Runs the policy against the live system."""

    def __init__(self, cfg: Config, state: CallCenterState, ami: AmiClient, roster: Roster,
                 pending_callbacks: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
                 dispatch_callback: CallbackDispatch | None = None,
                 campaigns: Callable[[], Sequence[str | CampaignView]] | None = None,
                 set_pace: Callable[[str, float, str], None] | None = None, guard: Any = None,
                 leadership: Leadership | None = None, shared: SharedTiers | None = None) -> None:
        self.cfg = cfg
        # only the leader dispatches callbacks, paces campaigns and decides the overflow tiers; a follower
        # decides each tick too (its estimates stay current) and keeps its own Asterisk's queue members in line
        # with the leader's tiers, so it acts in full at its first tick as leader
        self.leadership = leadership or Leadership.solo(cfg.node)
        self.follower_ticks = 0
        # a cluster: the leader publishes its tiers (fenced), a follower takes them, so the next leader goes on
        # from the overflow state the last one left (hysteresis included), not from its own node's view
        self.shared = shared
        self._published = ""
        self.state = state
        self.ami = ami
        self.roster = roster
        self.policy = policy_from(cfg)
        self.interval = cfg.balance.interval
        self.tiers: dict[str, TierState] = {}
        self.answers: dict[str, deque[tuple[float, float]]] = {}   # queue -> (time, hold) in the SL window
        self._pending: dict[tuple[str, str, str], float] = {}       # (kind, queue, interface) -> sent at
        self._pending_callbacks = pending_callbacks
        self._campaigns = campaigns
        self._set_pace = set_pace
        self._dispatch_callback = dispatch_callback
        self.callbacks_in_progress = 0
        self._callback_tasks: set[asyncio.Task[None]] = set()   # held: the event loop keeps only a weak reference
        self.actions_by_kind: dict[str, int] = {}
        self.errors = 0
        self._unreachable = RateLimit(10.0)
        self.ticks = 0
        self.last_decision: Decision | None = None
        self.last_tick_ms = 0.0
        self._wake = asyncio.Event()
        # ivr.campaigns.outbound.OutboundGuard: a mobile is a queue member only while the guard allows it (None: never)
        self.guard = guard
        self.mobiles: dict[str, tuple[bool, float]] = {}   # mobile number -> (allowed, checked at)

    # ------------------------------------------------------------- AMI feed
    def on_event(self, e: Any) -> None:
        """Keep the service-level window (hold times of answered calls)."""
        if e.get("Event") == ev.AGENT_CONNECT and e.get("Queue"):
            try:
                hold = float(e.get("HoldTime", 0))
            except ValueError:
                return
            self.answers.setdefault(e["Queue"], deque()).append((time.time(), hold))

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------- snapshot
    def snapshot(self, now: float, callbacks: list[dict[str, Any]] | None = None) -> Snapshot:
        queues = {}
        for name in self.cfg.queue_names():
            q = self.state.queues.get(name)
            members = q.members if q is not None else {}
            window = self.answers.setdefault(name, deque())
            while window and window[0][0] < now - SL_WINDOW_S:
                window.popleft()
            target = q.servicelevel if q is not None else 20
            stats = q.stats if q is not None else None
            aht = (stats.total_talk / stats.answered) if stats and stats.answered >= 5 and stats.total_talk else 180.0
            serving = [m for m in members.values()
                       if not m.paused_here and m.status not in (ev.DEVICE_UNAVAILABLE, ev.DEVICE_INVALID)]
            queues[name] = QueueView(
                name=name, waiting=len(q.callers) if q is not None else 0,
                longest_wait=max((now - c.joined_at for c in q.callers.values()), default=0.0) if q else 0.0,
                answered=len(window), answered_in_target=sum(1 for _, h in window if h <= target),
                aht=aht, members={i: m.penalty for i, m in members.items()},
                free=sum(1 for m in serving if m.available), serving=len(serving),
                idle=frozenset(m.interface for m in serving if m.available))
        agents = {}
        trunk = bool(self.cfg.asterisk.trunk_uri)
        for a in self.roster.agents.values():
            fallback = a.mobile_interface if trunk and self.mobile_allowed(a.mobile) else ""
            live = [q.members[i] for q in self.state.queues.values() for i in (a.interface, fallback)
                    if i and i in q.members]
            device = self.state.devices.get(a.interface)   # from DeviceStateChange: known in or out of a queue
            if device is not None:
                reachable = device not in UNREACHABLE_STATES
            else:
                reachable = not any(m.status in (ev.DEVICE_UNAVAILABLE, ev.DEVICE_INVALID)
                                    for m in live if m.interface == a.interface)
            agents[a.id] = AgentView(
                id=a.id, interface=a.interface, skill=a.skill, team=a.team, tier=a.tier, queues=tuple(a.queues),
                logged_in=self.roster.logged_in.get(a.id, False), penalty=a.penalty,
                paused=any(m.paused_here for m in live), reachable=reachable,
                busy=any(m.in_call or m.held_elsewhere for m in live), fallback_interface=fallback)
        cbs = tuple(CallbackView(id=str(c["id"]), queue=str(c.get("queue", "")), place=float(c.get("place") or 0),
                                 not_before=float(c.get("not_before") or 0), due=_due(c.get("due")))
                    for c in (callbacks or []) if c.get("status", "pending") == "pending")
        running = list(self._campaigns()) if self._campaigns else []
        views = {c.id: c for c in running if isinstance(c, CampaignView)}
        return Snapshot(now=now, queues=queues, agents=agents, tiers=dict(self.tiers), callbacks=cbs,
                        callbacks_in_progress=self.callbacks_in_progress,
                        campaigns=tuple(c.id if isinstance(c, CampaignView) else c for c in running),
                        campaign_views=views)

    def mobile_allowed(self, mobile: str) -> bool:
        hit = self.mobiles.get(mobile) if mobile else None
        return bool(hit and hit[0])

    async def check_mobiles(self, now: float) -> None:
        """Ask the outbound guard about every agent's mobile (again after MOBILE_RECHECK_S); a refusal is
        reported when it starts, and a refused mobile still in a queue is taken out."""
        if self.guard is None:
            return
        for a in list(self.roster.agents.values()):
            hit = self.mobiles.get(a.mobile) if a.mobile else None
            if not a.mobile or (hit is not None and now - hit[1] < MOBILE_RECHECK_S):
                continue
            verdict = await self.guard.check(a.mobile, "agent_mobile", count=False, ref=f"agent {a.id}",
                                             report=False)
            if verdict.reason == "unavailable":   # Redis away: as it was (a new mobile: not yet), asked again soon
                self.mobiles[a.mobile] = (bool(hit and hit[0]), now - MOBILE_RECHECK_S + 5.0)
                continue
            if not verdict.ok and (hit is None or hit[0]):
                await self.guard.report_refusal(a.mobile, verdict, "agent_mobile", f"agent {a.id}")
            self.mobiles[a.mobile] = (verdict.ok, now)
            if not verdict.ok:
                for q in list(self.state.queues.values()):
                    if a.mobile_interface in q.members:
                        await self._apply(Action("remove_member", "mobile refused by the outbound guard",
                                                 queue=q.name, interface=a.mobile_interface), now)

    # ---------------------------------------------------------------- apply
    async def tick(self) -> Decision | None:
        """One step. Queue membership first: it needs only AMI, the roster held in memory and the outbound
        guard's last verdicts on agents' mobiles, so queues an Asterisk restart left empty get their agents
        back even while Redis is down. Then the mobiles are asked about again and the callbacks read, both
        from Redis (a Redis error there leaves the membership applied)."""
        if not self.ami.connected:
            return None
        t0 = time.perf_counter()
        now = time.time()
        if not self.leadership.is_leader:
            if self.shared is not None:
                self.tiers = tiers_from_json(await self.shared.tiers()) or self.tiers
            snap = self.snapshot(now)
            decision = decide(snap, self.policy)
            if self.shared is None:
                self.tiers = dict(decision.tiers)
            # queue membership is each node's own Asterisk's: a follower applies it too, with the leader's
            # tiers (set-to-value actions: the same outcome however often they are sent)
            members = membership_actions(snap, self.tiers, desired_members(snap, self.tiers, self.policy),
                                         self.policy)
            self._pending = {k: t for k, t in self._pending.items() if now - t < PENDING_S}
            for action in members:
                await self._apply(action, now)
            self.last_decision = dataclasses.replace(decision, actions=tuple(members))
            self.follower_ticks += 1
            self.ticks += 1
            self.last_tick_ms = (time.perf_counter() - t0) * 1000
            return self.last_decision
        decision = decide(self.snapshot(now), self.policy)
        self.tiers = dict(decision.tiers)
        self._pending = {k: t for k, t in self._pending.items() if now - t < PENDING_S}
        # the campaigns' pace depends on the callbacks owed too: it is set from the decision that sees them
        paced_later = self._pending_callbacks is not None
        for action in decision.actions:
            if not (paced_later and action.kind == "campaign_pace"):
                await self._apply(action, now)
        if paced_later:
            decision = dataclasses.replace(decision, actions=tuple(a for a in decision.actions
                                                                   if a.kind != "campaign_pace"))
        self.last_decision = decision
        if not await self._publish():
            return decision
        await self.check_mobiles(now)     # the guard reads Redis: after membership (cached verdicts) is applied
        callbacks = await self._pending_callbacks() if self._pending_callbacks else []
        if callbacks or (paced_later and self._campaigns):
            second = decide(self.snapshot(now, callbacks), self.policy).actions
            dispatch = tuple(a for a in second if a.kind == "dispatch_callback")
            for action in dispatch + tuple(a for a in second if a.kind == "campaign_pace"):
                await self._apply(action, now)
            decision = dataclasses.replace(decision, actions=decision.actions + tuple(
                a for a in second if a.kind in ("dispatch_callback", "campaign_pace")))
            self.last_decision = decision
        self.ticks += 1
        self.last_tick_ms = (time.perf_counter() - t0) * 1000
        return decision

    async def _publish(self) -> bool:
        """A cluster's leader: its tiers into Redis when they changed (fenced). False once another node leads
        (nothing more is done this tick)."""
        if self.shared is None:
            return True
        text = tiers_to_json(self.tiers)
        if text == self._published:
            return True
        try:
            await self.shared.publish_tiers(self.leadership.fence(), text, self.leadership.node)
        except (Fenced, NotLeader) as exc:
            log.warning("balance: this node no longer leads (%s): stops acting", exc)
            return False
        self._published = text
        return True

    async def _apply(self, a: Any, now: float) -> None:
        key = (a.kind, a.queue, a.interface or a.callback_id)
        if key in self._pending:
            return
        try:
            if a.kind == "add_member":
                if a.interface.startswith("Local/") and not any(
                        x.mobile_interface == a.interface and self.mobile_allowed(x.mobile)
                        for x in self.roster.agents.values()):
                    log.warning("balance: %s not added to %s: not a mobile the outbound guard allows", a.interface,
                                a.queue)
                    return
                agent = next((x for x in self.roster.agents.values() if a.interface in x.interfaces), None)
                await self.ami.action(ev.QUEUE_ADD, {
                    "Queue": a.queue, "Interface": a.interface, "Penalty": a.penalty, "Paused": "false",
                    "MemberName": (agent.name or agent.id) if agent else a.interface, "StateInterface": a.interface})
            elif a.kind == "remove_member":
                await self.ami.action(ev.QUEUE_REMOVE, {"Queue": a.queue, "Interface": a.interface})
            elif a.kind == "set_penalty":
                await self.ami.action(ev.QUEUE_PENALTY, {"Queue": a.queue, "Interface": a.interface,
                                                         "Penalty": a.penalty})
            elif a.kind == "dispatch_callback":
                if self._dispatch_callback is None:
                    return
                self.callbacks_in_progress += 1
                task = asyncio.create_task(self._run_callback(a.callback_id, a.queue))
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)
            elif a.kind == "campaign_pace":
                if self._set_pace is not None:
                    self._set_pace(a.campaign, a.pace, a.reason)   # logs only when the pace changes
                return
            self._pending[key] = now
        except AmiError as exc:
            msg = str(exc).lower()
            if "already there" in msg or "not there" in msg:
                return  # the state will catch up from the event
            self.errors += 1
            log.warning("balance: %s %s %s failed: %s", a.kind, a.queue, a.interface, exc)
            return
        self.actions_by_kind[a.kind] = self.actions_by_kind.get(a.kind, 0) + 1
        log.info("balance: %s %s%s%s (%s)", a.kind, a.queue, f" {a.interface}" if a.interface else "",
                 f" penalty {a.penalty}" if a.kind in ("add_member", "set_penalty") else "", a.reason)

    async def _run_callback(self, callback_id: str, queue: str) -> None:
        try:
            assert self._dispatch_callback is not None
            await self._dispatch_callback(callback_id, queue)
        except Exception:
            log.exception("callback %s: dispatch failed", callback_id)
        finally:
            self.callbacks_in_progress -= 1

    async def run(self) -> None:
        while True:
            try:
                await self.ami.ready.wait()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:   # Redis restarting: one line now and then, no traceback
                self.errors += 1
                self._unreachable.log(log, logging.WARNING, "balance: Redis unreachable (%s); retrying", exc)
            except Exception:
                self.errors += 1
                log.exception("balance: tick failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
