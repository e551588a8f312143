"""The balancing policy: ``decide(snapshot, policy) -> Decision``, a pure function.

No I/O, no clock, no globals: everything it needs is in the snapshot (including
when each overflow tier last changed, for hysteresis), so the live loop and the
surge simulator run exactly the same code, and a decision can be replayed from
a logged snapshot.

What it decides, every tick:
- per queue, whether the volunteer overflow tier is open (opens on a long
  estimated wait or a low service level; closes only when both are good again
  and the tier has been open for ``min_open_s``: no flapping);
- the desired members of every queue with their penalties: core agents always;
  volunteers while their queue's tier is open; novices only on the simple
  queues and only while an experienced agent of their team is on duty to coach;
  on simple queues novices get the calls first (lower penalty), so experienced
  agents stay free for the complex ones;
- which callbacks to dispatch now (only into real idle capacity, oldest place
  first, never more than the idle agents left after the waiting callers);
- how fast outbound campaigns may dial: one capacity budget for inbound
  callers, the callbacks owed and the campaigns' transfers to agents. Inbound
  waits and callbacks set the share outbound may use (paused while a callback's
  promise is about to run out, slowed while more callbacks are owed than idle
  agents can take); that share goes to higher-priority campaigns first.
Every action carries its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping


SKILL_EXPERIENCED = "experienced"
SKILL_NOVICE = "novice"
TIER_CORE = "core"
TIER_VOLUNTEER = "volunteer"


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    interface: str
    skill: str = SKILL_EXPERIENCED
    team: str = ""
    tier: str = TIER_CORE
    queues: tuple[str, ...] = ()         # queues this agent may serve
    logged_in: bool = False
    paused: bool = False
    reachable: bool = True               # device registered / not UNAVAILABLE
    busy: bool = False                   # on a call or ringing
    penalty: int = 0                     # the supervisor's base penalty, added to the policy's own
    fallback_interface: str = ""         # the agent's mobile through the trunk (Local/<number>@agent-mobile/n)

    @property
    def live_interface(self) -> str:
        """Where queue calls reach the agent now: the device, or the mobile while the device is unreachable."""
        return self.fallback_interface if self.fallback_interface and not self.reachable else self.interface


@dataclass(frozen=True, slots=True)
class QueueView:
    name: str
    waiting: int = 0
    longest_wait: float = 0.0
    answered: int = 0                    # in the service-level window
    answered_in_target: int = 0
    aht: float = 180.0                   # measured average handle time
    members: Mapping[str, int] = field(default_factory=dict)   # interface -> current penalty
    free: int = 0                        # members idle now
    serving: int = 0                     # members logged in, not paused, reachable
    idle: frozenset[str] = frozenset()   # interfaces of the idle members (an agent may be in several queues)


@dataclass(frozen=True, slots=True)
class CallbackView:
    id: str
    queue: str
    place: float                         # when the caller first joined (their place in line)
    not_before: float = 0.0              # retry back-off
    due: float = math.inf                # when the promise the caller heard runs out (inf: no promise)


@dataclass(frozen=True, slots=True)
class CampaignView:
    id: str
    priority: int = 0                    # higher first when the budget is short; equal priorities share
    cps: float = 1.0                     # its full dialling rate: the unit of the split
    held: bool = False                   # dials nothing now (its transfers to agents are at max_transfers)


@dataclass(frozen=True, slots=True)
class TierState:
    open: bool = False
    since: float = 0.0                   # when it last opened or closed


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    queues: Mapping[str, QueueView]
    agents: Mapping[str, AgentView]
    tiers: Mapping[str, TierState] = field(default_factory=dict)
    callbacks: tuple[CallbackView, ...] = ()
    callbacks_in_progress: int = 0
    campaigns: tuple[str, ...] = ()
    campaign_views: Mapping[str, CampaignView] = field(default_factory=dict)   # by id; missing: priority 0, 1/s


@dataclass(frozen=True, slots=True)
class Policy:
    open_wait_s: float = 45.0            # open overflow when the estimated wait exceeds this...
    open_sl: float = 0.70                # ...or the service level falls below this
    close_wait_s: float = 15.0           # close only when the wait is below this
    close_sl: float = 0.85               # ...and the service level above this
    min_open_s: float = 120.0            # and the tier has been open this long
    sl_min_calls: int = 10               # service level counts only over this many answers
    simple_queues: tuple[str, ...] = ("refunds",)
    novice_penalty: int = 0
    experienced_penalty_on_simple: int = 1
    volunteer_penalty: int = 2           # volunteers take calls after core agents
    max_callbacks_in_flight: int = 5
    callback_urgent_s: float = 900.0     # a callback this close to its promise takes the next free agent
    campaign_slow_wait_s: float = 30.0   # outbound at half pace above this inbound wait
    campaign_pause_wait_s: float = 90.0  # and paused above this
    campaign_slow_pace: float = 0.5      # the pace of "slowed" (a long inbound wait, callbacks beyond idle agents)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str                            # add_member | remove_member | set_penalty | open_tier | close_tier
    reason: str                          # | dispatch_callback | campaign_pace
    queue: str = ""
    interface: str = ""
    penalty: int = 0
    callback_id: str = ""
    campaign: str = ""
    pace: float = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    tiers: Mapping[str, TierState]
    desired: Mapping[str, Mapping[str, int]]      # queue -> interface -> penalty
    estimates: Mapping[str, float]                # queue -> estimated wait of a new caller


def estimated_wait(q: QueueView, shared_ahead: float = 0.0) -> float:
    """Expected wait of a caller joining now (inf without agents).

    The mean of ``erlang.estimate_wait`` (no percentiles: this runs for every
    queue every tick); ``shared_ahead`` adds callers of other queues who wait
    for the same agents.
    """
    ahead = q.waiting + shared_ahead + 1 - q.free
    if ahead <= 0:
        return 0.0
    return math.inf if q.serving == 0 else ahead * q.aht / q.serving


def shared_callers(name: str, queues: Mapping[str, QueueView]) -> float:
    """Callers in other queues competing for this queue's agents (each queue's waiting callers
    spread over its members; the share of those members this queue also has)."""
    mine = set(queues[name].members)
    total = 0.0
    for other, o in queues.items():
        if other == name or not o.waiting or not o.members:
            continue
        overlap = len(mine & set(o.members))
        total += o.waiting * overlap / len(o.members)
    return total


def service_level(q: QueueView) -> float | None:
    return q.answered_in_target / q.answered if q.answered else None


def _tier(q: QueueView, state: TierState, now: float, p: Policy, wait: float) -> tuple[TierState, str]:
    sl = service_level(q) if q.answered >= p.sl_min_calls else None
    if not state.open:
        # a long estimate opens only when someone waits: busy agents alone are no reason to call in volunteers
        if wait > p.open_wait_s and q.waiting > 0:
            return TierState(True, now), f"estimated wait {_fmt(wait)} > {p.open_wait_s:.0f}s"
        if sl is not None and sl < p.open_sl:
            return TierState(True, now), f"service level {sl:.0%} < {p.open_sl:.0%}"
        return state, ""
    calm = wait < p.close_wait_s and (sl is None or sl >= p.close_sl) and q.waiting == 0
    if calm and now - state.since >= p.min_open_s:
        return TierState(False, now), f"estimated wait {_fmt(wait)} < {p.close_wait_s:.0f}s for {now - state.since:.0f}s"
    return state, ""


def _fmt(seconds: float) -> str:
    return "no agents" if math.isinf(seconds) else f"{seconds:.0f}s"


def _coaches(agents: Mapping[str, AgentView]) -> set[str]:
    """Teams with an experienced agent on duty (logged in, not paused, reachable).

    Agents with no team form one team of their own ("")."""
    return {a.team for a in agents.values()
            if a.skill == SKILL_EXPERIENCED and a.logged_in and not a.paused and a.reachable}


def desired_members(snap: Snapshot, tiers: Mapping[str, TierState], p: Policy) -> dict[str, dict[str, int]]:
    coached_teams = _coaches(snap.agents)
    out: dict[str, dict[str, int]] = {name: {} for name in snap.queues}
    for a in sorted(snap.agents.values(), key=lambda a: a.id):
        if not a.logged_in:
            continue
        for qname in a.queues:
            if qname not in out:
                continue
            simple = qname in p.simple_queues
            if a.skill == SKILL_NOVICE and (not simple or a.team not in coached_teams):
                continue
            if a.tier == TIER_VOLUNTEER and not tiers.get(qname, TierState()).open:
                continue
            if a.tier == TIER_VOLUNTEER:
                penalty = p.volunteer_penalty
            elif a.skill == SKILL_NOVICE:
                penalty = p.novice_penalty
            else:
                penalty = p.experienced_penalty_on_simple if simple else 0
            out[qname][a.live_interface] = penalty + a.penalty
    return out


def membership_actions(snap: Snapshot, tiers: Mapping[str, TierState], desired: Mapping[str, Mapping[str, int]],
                       p: Policy = Policy()) -> list[Action]:
    """The queue member changes that bring ``snap``'s queues to ``desired`` (add, penalty, remove). A node of
    a cluster that does not lead applies these to its own Asterisk with the leader's tiers."""
    actions: list[Action] = []
    managed = {i for a in snap.agents.values() for i in (a.interface, a.fallback_interface) if i}
    for name, q in sorted(snap.queues.items()):
        want = desired[name]
        for interface, penalty in sorted(want.items()):
            if interface not in q.members:
                actions.append(Action("add_member", _why_member(snap, interface, name, tiers), queue=name,
                                      interface=interface, penalty=penalty))
            elif q.members[interface] != penalty:
                actions.append(Action("set_penalty", f"penalty {q.members[interface]} -> {penalty}", queue=name,
                                      interface=interface, penalty=penalty))
        for interface in sorted(q.members):
            if interface in managed and interface not in want:
                actions.append(Action("remove_member", _why_not(snap, interface, name, tiers, p), queue=name,
                                      interface=interface))

    return actions


def decide(snap: Snapshot, p: Policy = Policy()) -> Decision:
    """One balancing step. Pure: the same snapshot always gives the same decision."""
    actions: list[Action] = []
    tiers: dict[str, TierState] = {}
    estimates: dict[str, float] = {}
    for name, q in sorted(snap.queues.items()):
        wait = estimated_wait(q, shared_callers(name, snap.queues))
        estimates[name] = wait
        old = snap.tiers.get(name, TierState())
        new, why = _tier(q, old, snap.now, p, wait)
        tiers[name] = new
        if new.open != old.open:
            actions.append(Action("open_tier" if new.open else "close_tier", why, queue=name))

    desired = desired_members(snap, tiers, p)
    actions.extend(membership_actions(snap, tiers, desired, p))
    actions.extend(_callbacks(snap, p))
    actions.extend(_campaign_pace(snap, estimates, p))
    return Decision(tuple(actions), tiers, desired, estimates)


def _agent_by_interface(snap: Snapshot, interface: str) -> AgentView | None:
    return next((a for a in snap.agents.values() if interface in (a.interface, a.fallback_interface)), None)


def _why_member(snap: Snapshot, interface: str, queue: str, tiers: Mapping[str, TierState]) -> str:
    a = _agent_by_interface(snap, interface)
    if a is not None and a.fallback_interface and interface == a.fallback_interface:
        return "device unreachable: queue calls go to the agent's mobile"
    if a is not None and a.tier == TIER_VOLUNTEER:
        return f"volunteer overflow open on {queue}"
    if a is not None and a.skill == SKILL_NOVICE:
        return f"novice on a simple queue, coached by team {a.team or '-'}"
    return "logged in"


def _why_not(snap: Snapshot, interface: str, queue: str, tiers: Mapping[str, TierState], p: Policy) -> str:
    a = _agent_by_interface(snap, interface)
    if a is None or not a.logged_in:
        return "logged out"
    if a.fallback_interface and interface != a.live_interface:
        return "device back: calls go to it again" if a.reachable else "device unreachable: mobile instead"
    if queue not in a.queues:
        return f"not assigned to {queue}"
    if a.tier == TIER_VOLUNTEER and not tiers.get(queue, TierState()).open:
        return f"volunteer overflow closed on {queue}"
    if a.skill == SKILL_NOVICE:
        return "novice without an experienced teammate on duty" if queue in p.simple_queues else "complex queue"
    return "not wanted"


def _callbacks(snap: Snapshot, p: Policy) -> list[Action]:
    """Dispatch callbacks: first the ones whose promise runs out within ``callback_urgent_s`` (earliest
    due first) into any free agent of their queue, even while callers wait: a promise made is owed;
    then the others (oldest place first) into idle capacity that waiting callers do not need."""
    budget = max(0, p.max_callbacks_in_flight - snap.callbacks_in_progress)
    free = {name: q.free for name, q in snap.queues.items()}
    out = []
    ready = [cb for cb in snap.callbacks if cb.not_before <= snap.now]
    urgent = sorted((cb for cb in ready if cb.due - snap.now <= p.callback_urgent_s), key=lambda c: (c.due, c.place, c.id))
    for cb in urgent:
        if budget <= 0:
            break
        if free.get(cb.queue, 0) <= 0:
            continue
        free[cb.queue] -= 1
        budget -= 1
        out.append(Action("dispatch_callback", f"promise runs out in {max(0.0, cb.due - snap.now):.0f}s: next free "
                          f"agent of {cb.queue}", queue=cb.queue, callback_id=cb.id))
    taken = {a.callback_id for a in out}
    spare = {name: max(0, free[name] - q.waiting) for name, q in snap.queues.items()}
    if any(q.idle for q in snap.queues.values()):
        # an idle agent who serves several queues counts once, after every waiting caller
        idle_agents = len(frozenset().union(*(q.idle for q in snap.queues.values())))
        budget = min(budget, max(0, idle_agents - len(out) - sum(q.waiting for q in snap.queues.values())))
    for cb in sorted(ready, key=lambda c: (c.place, c.id)):
        if budget <= 0:
            break
        if cb.id in taken or spare.get(cb.queue, 0) <= 0:
            continue
        spare[cb.queue] -= 1
        budget -= 1
        out.append(Action("dispatch_callback", f"{cb.queue} has an idle agent; caller waiting since {cb.place:.0f}",
                          queue=cb.queue, callback_id=cb.id))
    return out


def _campaign_pace(snap: Snapshot, estimates: Mapping[str, float], p: Policy) -> list[Action]:
    """How fast each campaign may dial: the outbound budget (``_outbound_budget``) split by priority."""
    if not snap.campaigns:
        return []
    pace, why = _outbound_budget(snap, estimates, p)
    return _split_by_priority(snap, pace, why)


def _outbound_budget(snap: Snapshot, estimates: Mapping[str, float], p: Policy) -> tuple[float, str]:
    """The share of the campaigns' full rate the agents can spare now, and why. Inbound callers and the
    callbacks owed come first; the tightest rule wins (several at the same pace: all their reasons)."""
    rules: list[tuple[float, str]] = []
    # a queue nobody staffs and nobody waits in is no reason to stop outbound
    worst = max((estimates[n] for n, q in snap.queues.items() if q.waiting > 0 or q.serving > 0), default=0.0)
    if worst > p.campaign_pause_wait_s:
        rules.append((0.0, f"inbound wait {_fmt(worst)} > {p.campaign_pause_wait_s:.0f}s: outbound paused"))
    elif worst > p.campaign_slow_wait_s:
        rules.append((p.campaign_slow_pace, f"inbound wait {_fmt(worst)} > {p.campaign_slow_wait_s:.0f}s: "
                      f"outbound at {_pct(p.campaign_slow_pace)} pace"))
    # a promise made is owed: in back-off or not, such a callback needs the next free agent
    urgent = [cb for cb in snap.callbacks if cb.due - snap.now <= p.callback_urgent_s]
    if urgent:
        first = min(cb.due for cb in urgent) - snap.now
        rules.append((0.0, f"{len(urgent)} callback(s) due within {p.callback_urgent_s:.0f}s (first in "
                      f"{max(0.0, first):.0f}s): outbound paused"))
    owed = len(snap.callbacks)
    takeable = _callbacks_idle_agents_can_take(snap)
    if owed > takeable:
        rules.append((p.campaign_slow_pace, f"{owed} callback(s) owed, idle agents can take {takeable}: "
                      f"outbound at {_pct(p.campaign_slow_pace)} pace"))
    if not rules:
        return 1.0, ("inbound calm: outbound at full pace" if not owed else
                     f"inbound calm, idle agents take the {owed} callback(s) owed: outbound at full pace")
    pace = min(r[0] for r in rules)
    return pace, "; ".join(why for r_pace, why in rules if r_pace == pace)


def _callbacks_idle_agents_can_take(snap: Snapshot) -> int:
    """How many of the pending callbacks idle agents can take now: per queue, its idle agents left after its
    waiting callers; in all, an idle agent who serves several queues counts once, after every waiting caller."""
    owed: dict[str, int] = {}
    for cb in snap.callbacks:
        owed[cb.queue] = owed.get(cb.queue, 0) + 1
    takeable = sum(min(n, max(0, snap.queues[q].free - snap.queues[q].waiting))
                   for q, n in owed.items() if q in snap.queues)
    if any(q.idle for q in snap.queues.values()):
        idle_agents = len(frozenset().union(*(q.idle for q in snap.queues.values())))
        takeable = min(takeable, max(0, idle_agents - sum(q.waiting for q in snap.queues.values())))
    return takeable


def _split_by_priority(snap: Snapshot, pace: float, why: str) -> list[Action]:
    """The budget (``pace`` of the campaigns' full rates, in calls/s) goes to the highest priority first:
    each priority gets its full rate before a lower one gets any; campaigns of equal priority share
    alike (the same fraction of their own rate). A held campaign dials nothing and takes no share."""
    views = {c: snap.campaign_views.get(c) or CampaignView(c) for c in snap.campaigns}
    levels = sorted({v.priority for v in views.values()}, reverse=True)
    if len(levels) <= 1 or pace >= 1.0 or pace <= 0.0:
        return [Action("campaign_pace", why, campaign=c, pace=pace) for c in snap.campaigns]
    budget = pace * sum(v.cps for v in views.values() if not v.held)
    paces: dict[str, tuple[float, str]] = {}
    for level in levels:
        group = [c for c in snap.campaigns if views[c].priority == level]
        rate = sum(views[c].cps for c in group if not views[c].held)
        share = 1.0 if rate <= 0 else min(1.0, budget / rate)
        share = round(share, 4)
        budget = max(0.0, budget - share * rate)
        if share >= 1.0:
            note = f"priority {level} first: full pace"
        elif share > 0.0:
            note = f"priority {level}: {_pct(share)} pace, the rest of the budget after higher priorities"
        else:
            note = f"priority {level}: paused, higher priorities take the budget"
        for c in group:
            paces[c] = (share, f"{why}; {note}")
    return [Action("campaign_pace", paces[c][1], campaign=c, pace=paces[c][0]) for c in snap.campaigns]


def _pct(x: float) -> str:
    return "half" if x == 0.5 else f"{x:.0%}"
