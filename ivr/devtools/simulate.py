"""Surge simulator: one crisis day (or a window of it) of the call centre, run two ways.

Design: a discrete-event simulation (``heapq`` of ``(time, seq, kind, payload)``, seeded
``random.Random``). Every ``tick`` s the ``balanced`` mode builds a ``Snapshot`` as the live loop
does (waiting, longest wait, free/serving members with penalties, answered / in-target over a
sliding window, AHT = talk / answered, tiers, pending callbacks), runs the unmodified ``decide``
and applies its actions. ``static`` is app_queue with a fixed setup: every logged-in agent
(volunteers and novices too) is a penalty-0 member of all their queues; no callbacks, no policy.
Both modes share roster, shifts (equal agent-hours) and callers: arrivals, patience and handle
times come from per-hour random streams independent of the mode (common random numbers).
Routing is app_queue-like: a new caller rings the free member with the lowest penalty (then the
longest idle); a freed agent takes the longest-waiting caller of the queues they are in.
Handle time is lognormal, novices ``novice_factor`` slower; patience is exponential. A caller
whose estimated wait (``policy.estimated_wait``, the menu's figure) exceeds the callback threshold
takes a callback with probability ``callback_accept`` (balanced only); ``decide`` dispatches it
and, as in ivr.callbacks.service, the customer is dialled (``callback_ring_s``, the dial is what counts
in flight) and then joins the queue ahead of the others (ivr-callback's QUEUE_PRIO).
Dropped calls (caller continuity, ivr/continuity/service.py): a share ``drop_share`` of the callers have
their call cut while waiting (after ``drop_after_s`` on average, exponential); ``recall_share`` of
them call again after ``recall_after_s`` on average. With ``place_keeping`` (the controller's
default) a caller who calls again within ``keep_window_s`` rejoins their queue at the place their
first call had (Queue()'s position), skipping the menu; without it they start again at the end.
The drop and recall draws come from their own random stream, so a profile without drops gives
the same figures as before. Person-level metrics follow each caller across their calls.
Metrics: ASA = mean wait of the answered; avg/p90 wait over all who queued; SL = answered within
target / answered; offered = answered + abandoned + waiting at end + callbacks requested; the
estimate error is per answered caller, for the policy's estimate and for Asterisk's ``holdtime``
((3*old + new) / 4 per answered call, what app_queue announces).
"""

from __future__ import annotations

import argparse, heapq, json, math, random, struct, sys, time, zlib  # noqa: E401
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..balance import forecast
from ..balance.erlang import average_speed_of_answer
from ..balance.menu_mix import CALLBACK as ROUTE_CALLBACK, QUEUE as ROUTE_QUEUE, SELF_SERVICE, Route, check_shares, load_routes
from ..balance.policy import (SKILL_EXPERIENCED, SKILL_NOVICE, TIER_CORE, TIER_VOLUNTEER, AgentView, CallbackView,
                     Policy, QueueView, Snapshot, TierState, decide, estimated_wait, shared_callers)

MODES = ("static", "balanced")
WAITING, ANSWERED, ABANDONED, CALLBACK, DROPPED = "waiting", "answered", "abandoned", "callback", "dropped"
SELF_SERVED, NOTIFIED, IN_MENU = "self_service", "notified", "in_menu"
_LOGIN, _LOGOUT, _ARRIVE, _END, _ABANDON, _CB_ANSWER, _DROP, _JOIN, _NOTICE = range(9)
DEFAULT_AHT = 180.0               # the live loop's AHT until a queue has 5 answered calls
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = ROOT / "profiles" / "crisis-day.yaml"
NOTICE_CAMPAIGN = "notice"
RATE_WINDOW_S = 900.0             # the live arrival rate the promise uses: joins over the last 15 min


@dataclass
class Profile:
    """A day to simulate; ``profiles/default.yaml`` documents every field."""
    arrivals_per_hour: list[float]          # 24 values, hour 0 .. 23
    queues: dict[str, float]                # queue -> share of the calls
    core: list[dict[str, Any]]              # shifts: {name, count, start, end, queues[, skill, tier]}
    name: str = "profile"
    seed: int = 1
    volunteers: dict[str, Any] = field(default_factory=dict)   # {teams, experienced, novices, start, end, queues}
    handle_mean_s: float = 171.0
    handle_cv: float = 0.6
    novice_factor: float = 1.3
    patience_mean_s: float = 240.0
    retry_share: float = 0.0
    retry_after_s: float = 600.0
    sl_target_s: float = 20.0
    sl_window_s: float = 1800.0             # as ivr.balance.loop.SL_WINDOW_S
    callback_threshold_s: float | str | None = None   # offer above this estimated wait, or "auto"
                                            # (None: the menu's callback_over; 300 s without a menu)
    callback_accept: float = 0.4
    callback_promise_s: float | str = "auto"   # what the caller is promised: seconds, or "auto" (forecast)
    callback_ring_s: float = 15.0           # dispatch -> customer answers (the dialling in flight)
    tick_s: float = 1.0
    connect_s: float = 0.0                  # from "a caller and a free agent" to "they talk", on every call:
                                            # app_queue's turn check and the phone's ring (~0.45 s measured,
                                            # devtools/connect_latency.py); nothing beside 171 s calls, but 4.5 s
                                            # of a 10x compressed hour: the crisis-hour replay puts it in
    drop_share: float = 0.0                 # share of callers whose call drops while they wait
    drop_after_s: float = 120.0             # mean time in the queue before the drop (exponential)
    recall_share: float = 0.8               # share of dropped callers who call again
    recall_after_s: float = 90.0            # mean time before they call again (exponential)
    keep_window_s: float = 600.0            # continuity.window: the place is kept this long
    place_keeping: bool = True              # continuity on (the default) or off
    policy: dict[str, Any] = field(default_factory=dict)      # overrides of Policy fields
    # the controller's menu (section ``menu``): callers choose a branch of the real menu
    menu_file: str = ""                     # a menu in dialplans/ (empty: no menu, callers pick ``queues``)
    menu_branches: dict[str, float] = field(default_factory=dict)      # branch (option's node) -> share
    menu_self_service: dict[str, float] = field(default_factory=dict)  # branch -> share who finish there
    menu_ivr_s: float = 30.0                # time in the menu before the queue (language, message, choice)
    menu_self_service_s: float = 90.0       # time a self-service call takes (booking entry, read-out)
    menu_enabled: bool = True               # self-service on (controller mode); off: those branches queue
    callback_forecast: str = "plan"         # what the promise looks ahead with: plan (the roster and the
                                            # hourly forecast) or live (the live picture held)
    callback_answer: float = 1.0            # share of called-back customers who answer
    # a notice campaign before the wave (section ``notices``, controller mode only)
    notices_enabled: bool = False
    notices_contacts: int = 0               # customers the campaign dials (affected bookings with a phone)
    notices_reach: float = 0.0              # share of the day's callers who are among those contacts
    notices_start: float = 0.0              # hours of the day the dialler works [start, end)
    notices_end: float = 24.0
    notices_per_hour: float = 0.0           # dials an hour at full pace
    notices_answer: float = 0.6             # share of dials answered
    notices_no_call: float = 0.0            # share of notified callers who then do not call
    notices_agent: float = 0.0              # share of answered notices that press for an agent
    notices_queue: str = ""                 # where those transfers queue
    notices_max_transfers: int = 2          # transfers in the queues or with agents at once (Pacing.max_transfers)
    notices_ring_s: float = 20.0            # dial to answer
    notices_message_s: float = 30.0         # the notice message before the key

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        """Build from the YAML layout (sections ``handle``, ``patience``, ``callback``, ``roster``)."""
        known, flat = {f.name for f in fields(cls)}, dict(d)
        for section in ("handle", "patience", "callback", "drop", "menu", "notices"):   # handle: {mean_s: 171}
            for k, v in (flat.pop(section, None) or {}).items():                       # -> handle_mean_s
                name = {("menu", "file"): "menu_file", ("menu", "branches"): "menu_branches",
                        ("menu", "self_service"): "menu_self_service", ("menu", "ivr_s"): "menu_ivr_s",
                        ("menu", "self_service_s"): "menu_self_service_s", ("menu", "enabled"): "menu_enabled"
                        }.get((section, k), k if k in known and section not in ("menu", "notices") else f"{section}_{k}")
                flat[name] = v
        roster = flat.pop("roster", None) or {}
        flat.setdefault("core", roster.get("core", []))
        flat.setdefault("volunteers", roster.get("volunteers") or {})
        if flat.get("menu_file"):
            flat.setdefault("queues", {})
        if set(flat) - known:
            raise ValueError(f"unknown profile keys: {sorted(set(flat) - known)}")
        p = cls(**flat)
        for name in ("callback_threshold_s", "callback_promise_s"):
            v = getattr(p, name)
            if v != "auto" and not isinstance(v, (int, float)) and not (v is None and name == "callback_threshold_s"):
                raise ValueError(f"{name.replace('_', '.', 1)}: a number of seconds or 'auto', got {v!r}")
        if p.callback_forecast not in ("plan", "live"):
            raise ValueError(f"callback.forecast: plan or live, got {p.callback_forecast!r}")
        if p.menu_file:
            check_shares(p.routes(), p.menu_branches)
            unknown = sorted(set(p.menu_self_service) - {b for b, r in p.routes().items() if r.kind == SELF_SERVICE})
            if unknown:
                raise ValueError(f"menu.self_service: {unknown} are not self-service branches of {p.menu_file}")
        if p.notices_enabled and p.notices_queue not in p.queue_names():
            raise ValueError(f"notices.queue: {p.notices_queue!r} is not a queue of the profile ({p.queue_names()})")
        return p

    def routes(self) -> dict[str, Route]:
        """The menu's branches (``menu.file``), walked once per profile."""
        cached = self.__dict__.get("_routes")
        if cached is None:
            path = Path(self.menu_file)
            cached = self.__dict__["_routes"] = load_routes(path if path.is_absolute() else ROOT / path)
        return cached

    def queue_names(self) -> list[str]:
        if not self.menu_file:
            return list(self.queues)
        return sorted({r.queue for r in self.routes().values()} | set(self.queues))

    def self_service_share(self) -> float:
        """Share of callers who finish in the menu (controller mode, self-service on)."""
        if not self.menu_file or not self.menu_enabled:
            return 0.0
        return sum(share * self.menu_self_service.get(b, 0.0) for b, share in self.menu_branches.items())

    def make_policy(self) -> Policy:
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.policy.items()}
        return Policy(**kw)


def load_profile(path: str | Path) -> Profile:
    import yaml  # PyYAML, a project dependency (profiles are YAML like the rest of the config)
    return Profile.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


@dataclass(slots=True, eq=False)
class Caller:
    id: int
    queue: str
    t: float                      # arrival
    patience: float
    handle: float                 # handle time with an experienced agent
    cb_handle: float              # handle time of the callback call, if any
    u_cb: float                   # takes a callback if this draw < callback_accept
    attempt: int = 1
    outcome: str = WAITING
    wait: float = 0.0
    est: float = 0.0              # policy's estimated wait at arrival
    est_ast: float = 0.0          # Asterisk's holdtime at arrival
    cb_offered: bool = False
    cb_join: float = 0.0          # when the called-back customer joined the queue (with priority)
    cb_at: float | None = None    # when the callback reached an agent
    drop_at: float = math.inf     # time in the queue after which this call drops (math.inf: never)
    recall_after: float = math.inf  # a dropped caller calls again this long after (math.inf: never)
    recall_patience: float = 0.0
    place: float = -1.0           # where in line this caller stands (arrival time; a returning caller's first)
    root: Caller | None = None    # the caller's first call (None: this is it)
    last: Caller | None = None    # on the first call: the caller's latest call
    waited_before: float = 0.0    # time waited in earlier calls that dropped
    branch: str = ""              # the menu branch chosen (menu profiles)
    kind: str = ROUTE_QUEUE       # where that branch ends: queue, self_service or callback
    u_ss: float = 1.0             # finishes in self-service if this draw < the branch's share
    u_reach: float = 1.0          # is among the notice campaign's contacts if this draw < notices.reach
    u_no_call: float = 1.0        # once notified, does not call if this draw < notices.no_call
    join: float = -1.0            # when the caller joined the queue (-1: not yet; the wait counts from here)
    transfer: bool = False        # a notice's "talk to an agent" transfer, not an inbound call
    promise: float | None = None  # the callback promise the caller heard (s from the request)
    cb_req: float = 0.0           # when the callback was requested
    est_erlc: float = math.nan    # Erlang C's ASA for the line at the caller's join
    est_shared: float = math.nan  # the policy's estimate counting the other queues' callers for the same agents
    est_stay: float = math.nan    # ... of whom only the share who stayed lately (the others give up first)

    def __post_init__(self) -> None:
        if self.place < 0:
            self.place = self.t


@dataclass(slots=True, eq=False)
class Agent:
    id: str
    interface: str
    skill: str
    tier: str
    team: str
    queues: tuple[str, ...]
    shifts: list[tuple[float, float]]
    logged_in: bool = False
    busy: bool = False
    current: str = ""             # queue of the call in progress
    idle_since: float = 0.0
    calls: list[tuple[float, float]] = field(default_factory=list)
    on: list[list[float]] = field(default_factory=list)       # logged-in intervals
    on_transfer: bool = False     # the call in progress is a notice's transfer

    def view(self) -> AgentView:
        return AgentView(self.id, self.interface, self.skill, self.team, self.tier, self.queues,
                         self.logged_in, busy=self.busy)


@dataclass(slots=True, eq=False)
class QState:
    name: str
    line: deque[Caller] = field(default_factory=deque)        # FIFO; left callers removed lazily
    prio: deque[Caller] = field(default_factory=deque)        # called-back customers, served first
    waiting: int = 0
    members: dict[str, int] = field(default_factory=dict)     # interface -> penalty
    answered: deque[tuple[float, bool]] = field(default_factory=deque)
    in_target: int = 0
    n_answered: int = 0           # cumulative, like app_queue's stats (the live loop's AHT)
    talk: float = 0.0
    holdtime: int = 0             # app_queue's moving average, integer seconds


def build_roster(p: Profile) -> list[Agent]:
    """Core agents by shift, then volunteer teams (default 2 experienced + 3 novices)."""
    out = [Agent(f"{s.get('name', 'core')}{i + 1}", f"PJSIP/{s.get('name', 'core')}{i + 1}",
                 s.get("skill", SKILL_EXPERIENCED), s.get("tier", TIER_CORE), "", tuple(s["queues"]),
                 [(s["start"] * 3600.0, s["end"] * 3600.0)]) for s in p.core for i in range(int(s["count"]))]
    v = p.volunteers
    n_exp = int(v.get("experienced", 2))
    for t in range(int(v.get("teams", 0))):
        for i in range(n_exp + int(v.get("novices", 3))):
            skill, aid = (SKILL_EXPERIENCED if i < n_exp else SKILL_NOVICE), f"team{t + 1}-{i + 1}"
            out.append(Agent(aid, f"PJSIP/{aid}", skill, TIER_VOLUNTEER, f"team{t + 1}", tuple(v["queues"]),
                             [(v["start"] * 3600.0, v["end"] * 3600.0)]))
    return out


def _lognormal(rng: random.Random, mean: float, cv: float) -> float:
    s2 = math.log(1.0 + cv * cv)
    return rng.lognormvariate(math.log(mean) - s2 / 2.0, math.sqrt(s2))


def make_callers(p: Profile, seed: int, h0: int, h1: int) -> list[Caller]:
    """Non-homogeneous Poisson arrivals, one random stream per hour (a window sees the day's callers);
    drops and recalls from a second stream per hour, the menu's draws from a third (the same callers
    whatever the mode, place keeping, self-service or notices)."""
    routes = p.routes() if p.menu_file else {}
    names, shares = ((list(p.menu_branches), list(p.menu_branches.values())) if routes
                     else (list(p.queues), list(p.queues.values())))
    out: list[Caller] = []
    for h in range(h0, h1):
        rng, rate, t = random.Random(f"{seed}:{h}"), p.arrivals_per_hour[h] / 3600.0, h * 3600.0
        drops, menu = random.Random(f"{seed}:{h}:drops"), random.Random(f"{seed}:{h}:menu")
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= (h + 1) * 3600.0:
                break
            pick = rng.choices(names, shares)[0]
            c = Caller(len(out), routes[pick].queue if routes else pick, t, rng.expovariate(1.0 / p.patience_mean_s),
                       _lognormal(rng, p.handle_mean_s, p.handle_cv),
                       _lognormal(rng, p.handle_mean_s, p.handle_cv), rng.random())
            if routes:
                c.branch, c.kind = pick, routes[pick].kind
                c.u_ss, c.u_reach, c.u_no_call = menu.random(), menu.random(), menu.random()
            if p.drop_share > 0:
                u, after, u_recall = drops.random(), drops.expovariate(1.0 / p.drop_after_s), drops.random()
                recall, patience = drops.expovariate(1.0 / p.recall_after_s), drops.expovariate(1.0 / p.patience_mean_s)
                if u < p.drop_share:
                    c.drop_at = after
                    c.recall_after = recall if u_recall < p.recall_share else math.inf
                    c.recall_patience = patience
            out.append(c)
    return out


class Simulation:
    """One mode over hours [h0, h1) of a profile: ``Simulation(...).run().summary()``."""

    def __init__(self, p: Profile, mode: str, seed: int | None = None, hours: tuple[int, int] = (0, 24),
                 tick: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.p, self.mode, self.policy = p, mode, p.make_policy()
        self.seed, self.h0, self.h1 = (p.seed if seed is None else seed), *hours
        self.start, self.end, self.tick = self.h0 * 3600.0, self.h1 * 3600.0, tick or p.tick_s
        self.rng = random.Random(f"{self.seed}:{mode}:retry")
        self.callers, self.agents = make_callers(p, self.seed, self.h0, self.h1), build_roster(p)
        self.by_if = {a.interface: a for a in self.agents}
        self.views = {a.id: a.view() for a in self.agents}     # AgentViews, rebuilt only on change
        self.queues = {n: QState(n) for n in p.queue_names()}
        self.tiers: dict[str, TierState] = {}
        self.tier_log: list[tuple[float, str, str]] = []
        self.pending: dict[str, Caller] = {}                   # callbacks not made yet
        self.cb_in_progress = self.decisions = self.seq = 0
        self.runtime_s = self._now = 0.0
        self.heap: list[tuple[float, int, int, Any]] = []
        self.menu = bool(p.menu_file) and mode == "balanced"   # callers walk the menu (controller only)
        self.joins: deque[float] = deque()                     # queue joins of the last RATE_WINDOW_S
        self.left: deque[tuple[float, bool]] = deque()         # (when, answered) of callers who left a queue
        self.talk = 0.0
        self.n_answered = 0
        self.plan_agents, self.plan_arrivals = self._plan()
        # the notice campaign: its contacts in dialling order (a caller among them, or None: a customer
        # who would not have called), dialled at the policy's pace while transfers leave room
        self.notices = mode == "balanced" and p.notices_enabled and p.notices_per_hour > 0
        self.notice_rng = random.Random(f"{self.seed}:notices")
        self.contacts: list[Caller | None] = []
        if self.notices:
            reached: list[Caller | None] = [c for c in self.callers if c.u_reach < p.notices_reach]
            self.contacts = reached + [None] * max(0, p.notices_contacts - len(reached))
            self.notice_rng.shuffle(self.contacts)
        self.notice_i, self.notice_credit, self.notice_pace = 0, 0.0, 1.0
        self.transfers_in_flight = self.notices_dialled = self.notices_answered = 0
        for c in self.callers:
            self._push(c.t, _ARRIVE, c)
        for a in self.agents:
            for s, e in a.shifts:
                if e > self.start and s < self.end:
                    self._push(max(s, self.start), _LOGIN, a)
                    if e < self.end:
                        self._push(e, _LOGOUT, a)

    def _push(self, t: float, kind: int, obj: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    def run(self) -> Simulation:
        t0 = time.perf_counter()
        handlers = (self._login, self._logout, self._arrive, self._end_call, self._abandon, self._cb_answer,
                    self._drop, self._join, self._notice)
        next_tick = self.start if self.mode == "balanced" else math.inf
        while True:
            t_ev = self.heap[0][0] if self.heap else math.inf
            if min(t_ev, next_tick) >= self.end:
                break
            if t_ev <= next_tick:                               # events first, then the tick
                _, _, kind, obj = heapq.heappop(self.heap)
                self._now = t_ev
                handlers[kind](obj, t_ev)
            else:
                self._now = next_tick
                self._tick(next_tick)
                next_tick += self.tick
        for a in self.agents:
            if a.logged_in:
                a.on[-1][1] = self.end
        self.runtime_s = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ events
    def _set(self, a: Agent, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(a, k, v)
        self.views[a.id] = a.view()

    def _login(self, a: Agent, now: float) -> None:
        self._set(a, logged_in=True, idle_since=now)
        a.on.append([now, now])
        if self.mode == "static":
            for q in a.queues:
                self.queues[q].members[a.interface] = 0
                self._route(self.queues[q])

    def _logout(self, a: Agent, now: float) -> None:
        self._set(a, logged_in=False)                           # a call in progress is finished
        a.on[-1][1] = now
        if self.mode == "static":
            for q in a.queues:
                self.queues[q].members.pop(a.interface, None)

    def _plan(self) -> tuple[list[float], list[float]]:
        """The hourly plan the promise looks ahead with: agents on shift (novices count 1/novice_factor)
        and the calls that will need an agent (the self-service share taken out in controller mode)."""
        agents = [0.0] * 24
        for a in self.agents:
            w = 1.0 / self.p.novice_factor if a.skill == SKILL_NOVICE else 1.0
            for s, e in a.shifts:
                for h in range(24):
                    agents[h] += w * _overlap(s, e, h * 3600.0, (h + 1) * 3600.0) / 3600.0
        share = 1.0 - (self.p.self_service_share() if self.mode == "balanced" else 0.0)
        return agents, [x * share for x in self.p.arrivals_per_hour]

    def _arrive(self, c: Caller, now: float) -> None:
        """A call comes in: with the menu (controller), self-service may finish it; the others join a
        queue after the menu. Static callers and callers back at their place go straight to the queue."""
        if c.outcome == NOTIFIED:                                # the notice answered it: no call
            return
        returning = c.place < c.t
        if not self.menu or returning or c.transfer:
            self._join(c, now)
            return
        delay = self.p.menu_ivr_s
        if c.kind == SELF_SERVICE and self.p.menu_enabled:
            if c.u_ss < self.p.menu_self_service.get(c.branch, 0.0):
                c.outcome, c.join = SELF_SERVED, now
                return
            delay += self.p.menu_self_service_s               # tried, then pressed 0 for an agent
        c.outcome = IN_MENU
        self._push(now + delay, _JOIN, c)

    def _join(self, c: Caller, now: float) -> None:
        q = self.queues[c.queue]
        c.outcome, c.join = WAITING, now
        views = {n: self._queue_view(o, now) for n, o in self.queues.items()}
        c.est, c.est_ast = estimated_wait(views[q.name]), float(q.holdtime)
        c.est_shared = estimated_wait(views[q.name], shared_callers(q.name, views))
        c.est_stay = estimate_with_leavers(views[q.name], shared_callers(q.name, views), self._stay_share(now))
        c.est_erlc = self._erlang_c(now)
        self.joins.append(now)
        returning = c.place < c.t    # back at their place: straight to the queue, no menu, no offer
        if self.mode == "balanced" and not returning and not c.transfer:
            asked = self.menu and c.kind == ROUTE_CALLBACK               # pressed 9: asks for one
            over = self._offer_over(c)
            if asked or over is not None:
                promise = self._promise(now)
                # the offer looks at the larger of app_queue's holdtime (the estimate the caller hears: it
                # measures best on the crisis day, docs/crisis-day.md) and the policy's, which sees a
                # queue building before the moving average of past holds does
                _, offer_on = forecast.spoken_and_offer(c.est, c.est_ast if q.n_answered >= forecast.MIN_HISTORY
                                                        else None)
                offered = asked or forecast.offer_callback(offer_on, promise, over)
                if offered and not asked:
                    c.cb_offered = True
                if asked or (offered and c.u_cb < self.p.callback_accept):
                    c.outcome, c.promise, c.cb_req = CALLBACK, promise.seconds, now
                    self.pending[str(c.id)] = c
                    return
        if returning:   # Queue()'s position: behind the callers whose place is older
            i = next((i for i, o in enumerate(q.line) if o.place > c.place), len(q.line))
            q.line.insert(i, c)
        else:
            q.line.append(c)
        q.waiting += 1
        self._push(now + c.patience, _ABANDON, c)
        if c.drop_at < c.patience:
            self._push(now + c.drop_at, _DROP, c)
        self._route(q)

    def _offer_over(self, c: Caller) -> float | str | None:
        """The callback offer threshold: the profile's, else the queue node's ``callback_over``."""
        if self.p.callback_threshold_s is not None:
            return self.p.callback_threshold_s
        if self.menu and c.branch:
            return self.p.routes()[c.branch].callback_over
        return 300.0

    def _promise(self, now: float) -> forecast.Promise:
        """What a caller asking for a callback now is told: a fixed promise, or the forecast's."""
        if self.p.callback_promise_s != "auto":
            return forecast.Promise(float(self.p.callback_promise_s), None, "fixed")
        agents = sum(1.0 / self.p.novice_factor if a.skill == SKILL_NOVICE else 1.0
                     for a in self.agents if a.logged_in)
        aht = self._aht()
        outlook = (forecast.outlook_from_hours(now, self.plan_agents, self.plan_arrivals)
                   if self.p.callback_forecast == "plan" else ())
        return forecast.callback_promise(
            waiting=sum(q.waiting for q in self.queues.values()), callbacks_ahead=len(self.pending) + self.cb_in_progress,
            aht=aht, agents=agents, arrivals_per_s=self._arrival_rate(now), outlook=outlook)

    def _aht(self) -> float:
        return self.talk / self.n_answered if self.n_answered >= 5 else DEFAULT_AHT

    def _arrival_rate(self, now: float) -> float:
        """Queue joins per second over the last RATE_WINDOW_S (the live loop's measured arrival rate)."""
        while self.joins and self.joins[0] < now - RATE_WINDOW_S:
            self.joins.popleft()
        return len(self.joins) / RATE_WINDOW_S

    def _stay_share(self, now: float) -> float:
        """Share of the callers who left the queue lately (30 min) by being answered, not by giving up."""
        while self.left and self.left[0][0] < now - self.p.sl_window_s:
            self.left.popleft()
        n = len(self.left)
        return 1.0 if n < 10 else sum(ok for _, ok in self.left) / n

    def _erlang_c(self, now: float) -> float:
        """Erlang C's ASA for the whole line now (measured arrival rate, AHT and agents logged in)."""
        agents = sum(1 for a in self.agents if a.logged_in)
        aht = self._aht()
        traffic = self._arrival_rate(now) * aht
        if agents == 0 or traffic >= agents:
            return math.inf
        return average_speed_of_answer(traffic, agents, aht)

    def _notice(self, entry: Caller | None, now: float) -> None:
        """A notice was answered (and its message heard): the customer may not call, or press for an agent."""
        self.notices_answered += 1
        future = entry is not None and entry.t > now and entry.outcome == WAITING
        if future and entry is not None and entry.u_no_call < self.p.notices_no_call:
            entry.outcome = NOTIFIED
        if self.notice_rng.random() < self.p.notices_agent:
            handle = _lognormal(self.notice_rng, self.p.handle_mean_s, self.p.handle_cv)
            r = Caller(len(self.callers), self.p.notices_queue, now,
                       self.notice_rng.expovariate(1.0 / self.p.patience_mean_s), handle, handle, 1.0, transfer=True)
            self.callers.append(r)
            if future and entry is not None and entry.outcome == WAITING:
                entry.outcome = NOTIFIED                           # (talked to us already)
            if self.transfers_in_flight >= self.p.notices_max_transfers:
                # the campaign's transfers are at their cap: the notice books a callback instead
                promise = self._promise(now)
                r.outcome, r.promise, r.cb_req, r.join = CALLBACK, promise.seconds, now, now
                self.pending[str(r.id)] = r
                return
            self.transfers_in_flight += 1
            self._join(r, now)

    def _dial_notices(self, now: float) -> None:
        p = self.p
        if not (p.notices_start * 3600.0 <= now < p.notices_end * 3600.0) or self.notice_i >= len(self.contacts):
            return
        self.notice_credit = min(5.0, self.notice_credit + p.notices_per_hour / 3600.0 * self.tick * self.notice_pace)
        while self.notice_credit >= 1.0 and self.notice_i < len(self.contacts) \
                and self.transfers_in_flight < p.notices_max_transfers:
            self.notice_credit -= 1.0
            entry = self.contacts[self.notice_i]
            self.notice_i += 1
            self.notices_dialled += 1
            if self.notice_rng.random() < p.notices_answer:
                self._push(now + p.notices_ring_s + p.notices_message_s, _NOTICE, entry)

    def _drop(self, c: Caller, now: float) -> None:
        """The call is cut while waiting; the caller may call again (and, with place keeping, get their place)."""
        if c.outcome != WAITING:
            return
        c.outcome, c.wait = DROPPED, now - c.join
        self.queues[c.queue].waiting -= 1
        if not math.isfinite(c.recall_after) or now + c.recall_after >= self.end:
            return
        t = now + c.recall_after
        keep = self.p.place_keeping and c.recall_after <= self.p.keep_window_s
        r = Caller(len(self.callers), c.queue, t, c.recall_patience, c.handle, c.cb_handle, c.u_cb, c.attempt + 1,
                   place=c.place if keep else -1.0, root=c.root or c, waited_before=c.waited_before + c.wait)
        r.root.last = r  # type: ignore[union-attr]
        self.callers.append(r)
        self._push(t, _ARRIVE, r)

    def _abandon(self, c: Caller, now: float) -> None:
        if c.outcome != WAITING or c.join < 0:
            return
        c.outcome, c.wait = ABANDONED, now - c.join
        self.queues[c.queue].waiting -= 1
        self.left.append((now, False))
        if c.transfer:
            self.transfers_in_flight -= 1
            return
        if self.p.retry_share > 0 and self.rng.random() < self.p.retry_share:
            # the same person calls again, for an agent this time (the menu again, but no self-service)
            r = Caller(len(self.callers), c.queue, now + self.rng.expovariate(1.0 / self.p.retry_after_s),
                       self.rng.expovariate(1.0 / self.p.patience_mean_s), c.handle, c.cb_handle, c.u_cb, c.attempt + 1,
                       root=c.root or c, waited_before=c.waited_before + c.wait, branch=c.branch,
                       u_reach=c.u_reach, u_no_call=c.u_no_call)
            if r.t < self.end:
                r.root.last = r  # type: ignore[union-attr]
                self.callers.append(r)
                self._push(r.t, _ARRIVE, r)

    def _cb_answer(self, c: Caller, now: float) -> None:
        """The called-back customer answered: into the queue ahead of the others (QUEUE_PRIO)."""
        self.cb_in_progress -= 1
        q = self.queues[c.queue]
        c.cb_join = now
        q.prio.append(c)
        q.waiting += 1
        self._route(q)

    def _end_call(self, a: Agent, now: float) -> None:
        self.queues[a.current].talk += now - a.calls[-1][0]
        self.talk += now - a.calls[-1][0]
        self.n_answered += 1
        if a.on_transfer:
            self.transfers_in_flight -= 1
            a.on_transfer = False
        self._set(a, busy=False, idle_since=now)
        if not a.logged_in:
            a.on[-1][1] = now                                   # worked past the end of the shift
            return
        heads = [((0, q.prio[0].cb_join) if q.prio else (1, q.line[0].place), q.name)
                 for q in map(self.queues.__getitem__, a.queues) if a.interface in q.members and self._head(q)]
        if heads:
            self._answer(self.queues[min(heads)[1]], a)

    # ----------------------------------------------------------------- routing
    def _head(self, q: QState) -> Caller | None:
        while q.line and q.line[0].outcome != WAITING:
            q.line.popleft()
        return q.prio[0] if q.prio else q.line[0] if q.line else None

    def _free_member(self, q: QState) -> Agent | None:
        """The free member app_queue rings first: lowest penalty, then longest idle."""
        best, key = None, (math.inf, math.inf)
        for iface, pen in q.members.items():
            a = self.by_if[iface]
            if a.logged_in and not a.busy and (pen, a.idle_since) < key:
                best, key = a, (pen, a.idle_since)
        return best

    def _answer(self, q: QState, a: Agent) -> None:
        """Connect the head caller (called-back customers first) to agent ``a``."""
        c = q.prio.popleft() if q.prio else q.line.popleft()
        q.waiting -= 1
        delay = self.p.connect_s                                   # app_queue's turn + the ring
        now = self._now + delay
        if c.outcome == CALLBACK:
            c.cb_at, hold, handle = now, now - c.cb_join, c.cb_handle
        else:
            c.outcome, c.wait = ANSWERED, now - c.join
            hold, handle = c.wait, c.handle
            self.left.append((now, True))
        a.on_transfer = c.transfer and c.outcome != CALLBACK      # a transfer turned callback is not one
        q.answered.append((now, hold <= self.p.sl_target_s))  # the AgentConnect HoldTime the loop sees
        q.in_target += hold <= self.p.sl_target_s
        q.n_answered += 1
        q.holdtime = (3 * q.holdtime + int(hold)) >> 2          # app_queue's recalc_holdtime
        handle *= self.p.novice_factor if a.skill == SKILL_NOVICE else 1.0
        self._set(a, busy=True, current=q.name)
        a.calls.append((now, now + handle))
        self._push(now + handle, _END, a)

    def _route(self, q: QState) -> None:
        while self._head(q) and (a := self._free_member(q)) is not None:
            self._answer(q, a)

    def _queue_view(self, q: QState, now: float) -> QueueView:
        cut = now - self.p.sl_window_s
        while q.answered and q.answered[0][0] < cut:
            q.in_target -= q.answered.popleft()[1]
        serving = [a for a in map(self.by_if.__getitem__, q.members) if a.logged_in]
        idle = frozenset(a.interface for a in serving if not a.busy)
        self._head(q)                                           # drops the callers who left
        joined = ([q.prio[0].cb_join] if q.prio else []) + ([q.line[0].join] if q.line else [])
        aht = q.talk / q.n_answered if q.n_answered >= 5 and q.talk else DEFAULT_AHT
        return QueueView(q.name, q.waiting, now - min(joined) if joined else 0.0, len(q.answered), q.in_target, aht,
                         dict(q.members), len(idle), len(serving), idle)

    # -------------------------------------------------------------- the policy
    def _tick(self, now: float) -> None:
        running = (NOTICE_CAMPAIGN,) if self.notices and self.notice_i < len(self.contacts) else ()
        snap = Snapshot(now, {n: self._queue_view(q, now) for n, q in self.queues.items()}, self.views,
                        dict(self.tiers), tuple(CallbackView(k, c.queue, c.place, due=c.cb_req + c.promise
                                                             if c.promise is not None else math.inf)
                                                for k, c in self.pending.items()),
                        self.cb_in_progress, running)
        d = decide(snap, self.policy)
        self.decisions += 1
        self.tiers = dict(d.tiers)
        touched: set[str] = set()
        for act in d.actions:
            q = self.queues.get(act.queue)
            if act.kind in ("open_tier", "close_tier"):
                self.tier_log.append((now, act.queue, act.kind))
            elif act.kind in ("add_member", "set_penalty") and q:
                q.members[act.interface] = act.penalty
                touched.add(q.name)
            elif act.kind == "remove_member" and q:
                q.members.pop(act.interface, None)
            elif act.kind == "campaign_pace" and act.campaign == NOTICE_CAMPAIGN:
                self.notice_pace = act.pace
        for name in sorted(touched):
            self._route(self.queues[name])
        for act in d.actions:   # dial the customer; once they answer they join the queue with priority
            if act.kind == "dispatch_callback" and act.callback_id in self.pending:
                self.cb_in_progress += 1
                self._push(now + self.p.callback_ring_s, _CB_ANSWER, self.pending.pop(act.callback_id))
        if self.notices:
            self._dial_notices(now)

    # ----------------------------------------------------------------- metrics
    def summary(self, h0: float | None = None, h1: float | None = None) -> dict[str, Any]:
        """Metrics for the callers who arrived in hours [h0, h1) (default: the whole window)."""
        lo, hi = (self.start if h0 is None else h0 * 3600.0), (self.end if h1 is None else h1 * 3600.0)
        everyone = [c for c in self.callers if lo <= c.t < hi]
        cs = [c for c in everyone if c.outcome != NOTIFIED]                   # the calls that came in
        ans = [c for c in cs if c.outcome == ANSWERED]
        queued = sorted(c.wait for c in cs if c.outcome in (ANSWERED, ABANDONED))
        cbs = [c for c in cs if c.outcome == CALLBACK]
        made = [c for c in cbs if c.cb_at is not None]
        promised = [c for c in made if c.promise is not None]
        kept = sum(c.cb_at - c.cb_req <= c.promise for c in promised)  # type: ignore[operator]
        n_ab, est = sum(c.outcome == ABANDONED for c in cs), [c for c in ans if math.isfinite(c.est)]
        erlc = [c for c in ans if math.isfinite(c.est_erlc)]
        n_ss = sum(c.outcome == SELF_SERVED for c in cs)
        out: dict[str, Any] = {
            "offered": len(cs), "answered": len(ans), "abandoned": n_ab,
            "abandoned_pct": 100.0 * n_ab / len(cs) if cs else 0.0,
            "waiting_end": sum(c.outcome in (WAITING, IN_MENU) for c in cs), "retries": sum(c.attempt > 1 for c in cs),
            "asa_s": _mean([c.wait for c in ans]),
            "sl_pct": 100.0 * sum(c.wait <= self.p.sl_target_s for c in ans) / len(ans) if ans else 0.0,
            "avg_wait_s": _mean(queued), "p90_wait_s": queued[int(0.9 * (len(queued) - 1))] if queued else 0.0,
            "self_service": n_ss, "served": len(ans) + n_ss + len(made),
            "cb_offered": sum(c.cb_offered for c in cs), "cb_requested": len(cbs), "cb_made": len(made),
            "cb_kept": kept, "cb_kept_pct": 100.0 * kept / len(promised) if promised else 0.0,
            "cb_no_promise": len(made) - len(promised), "cb_pending_end": len(cbs) - len(made),
            "cb_wait_avg_s": _mean([c.cb_at - c.cb_req for c in made]),  # type: ignore[operator]
            "cb_promise_avg_s": _mean([c.promise for c in cbs if c.promise is not None]),
            "notified_no_call": len(everyone) - len(cs), "transfers": sum(c.transfer for c in cs),
            "est_mae_s": _mean([abs(c.est - c.wait) for c in est]), "est_bias_s": _mean([c.est - c.wait for c in est]),
            "est_infinite": len(ans) - len(est), "ast_mae_s": _mean([abs(c.est_ast - c.wait) for c in ans]),
            "ast_bias_s": _mean([c.est_ast - c.wait for c in ans]),
            "shared_mae_s": _mean([abs(c.est_shared - c.wait) for c in ans if math.isfinite(c.est_shared)]),
            "shared_bias_s": _mean([c.est_shared - c.wait for c in ans if math.isfinite(c.est_shared)]),
            "stay_mae_s": _mean([abs(c.est_stay - c.wait) for c in ans if math.isfinite(c.est_stay)]),
            "stay_bias_s": _mean([c.est_stay - c.wait for c in ans if math.isfinite(c.est_stay)]),
            "erlc_mae_s": _mean([abs(c.est_erlc - c.wait) for c in erlc]),
            "erlc_bias_s": _mean([c.est_erlc - c.wait for c in erlc]), "erlc_infinite": len(ans) - len(erlc),
            "agent_hours": sum(_overlap(s, e, lo, hi) for a in self.agents for s, e in a.shifts) / 3600.0}
        # people, not calls: each caller followed from their first call to their last
        firsts = [c for c in cs if c.root is None and not c.transfer]
        lasts = [c.last or c for c in firsts]
        lost = [c for c in lasts if c.outcome in (ABANDONED, DROPPED)]
        total = [c.waited_before + c.wait for c in lasts if c.outcome in (ANSWERED, ABANDONED, DROPPED)]
        out.update({"people": len(firsts), "drops": sum(c.outcome == DROPPED for c in cs),
                    "recalls": sum(c.root is not None for c in cs),
                    "returned_to_place": sum(c.root is not None and c.place < c.t for c in cs),
                    "lost_pct": 100.0 * len(lost) / len(firsts) if firsts else 0.0,
                    "person_wait_s": _mean(total)})
        hit = [c.last or c for c in firsts if c.outcome == DROPPED]      # people whose (first) call dropped
        out.update({"dropped_people": len(hit),
                    "dropped_lost_pct": 100.0 * sum(c.outcome in (ABANDONED, DROPPED) for c in hit) / len(hit)
                    if hit else 0.0,
                    "dropped_wait_s": _mean([c.waited_before + c.wait for c in hit if c.outcome != WAITING])})
        for label, grp in (("core", [a for a in self.agents if a.tier == TIER_CORE]),
                           ("volunteer", [a for a in self.agents if a.tier == TIER_VOLUNTEER]),
                           ("novice", [a for a in self.agents if a.skill == SKILL_NOVICE])):
            on = sum(_overlap(s, e, lo, hi) for a in grp for s, e in a.on)
            busy = sum(_overlap(s, e, lo, hi) for a in grp for s, e in a.calls)
            out[f"occ_{label}_pct"] = min(100.0, 100.0 * busy / on) if on else 0.0
        return out


def estimate_with_leavers(q: QueueView, shared_ahead: float, stay: float) -> float:
    """The policy's estimate with the callers ahead (this queue's and, shared, the other queues')
    thinned to the share who lately stayed until answered."""
    ahead = (q.waiting + shared_ahead) * stay + 1 - q.free
    if ahead <= 0:
        return 0.0
    return math.inf if q.serving == 0 else ahead * q.aht / q.serving


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _overlap(s: float, e: float, lo: float, hi: float) -> float:
    return max(0.0, min(e, hi) - max(s, lo))


def run_modes(p: Profile, modes: Sequence[str] = MODES, seed: int | None = None,
              hours: tuple[int, int] = (0, 24), tick: float | None = None) -> dict[str, Any]:
    """Run the modes; a JSON-ready dict with overall, peak-hour and hourly figures per mode."""
    peak = max(range(*hours), key=lambda h: p.arrivals_per_hour[h])   # the busiest hour
    out: dict[str, Any] = {"profile": p.name, "seed": p.seed if seed is None else seed, "hours": list(hours),
                           "peak_hour": peak, "modes": {}}
    for m in modes:
        sim = Simulation(p, m, seed, hours, tick).run()
        out["modes"][m] = {"overall": sim.summary(), "peak": sim.summary(peak, peak + 1),
                           "hourly_avg_wait_s": [sim.summary(h, h + 1)["avg_wait_s"] for h in range(*hours)],
                           "tier_events": sim.tier_log, "decisions": sim.decisions, "runtime_s": sim.runtime_s}
    return out


DROP_ROWS = [("callers (people)", "people", "{:.0f}"), ("dropped calls", "drops", "{:.0f}"),
             ("called again", "recalls", "{:.0f}"), ("back at their place", "returned_to_place", "{:.0f}"),
             ("callers lost %", "lost_pct", "{:.1f}"), ("total wait per caller s", "person_wait_s", "{:.1f}"),
             ("callers cut off", "dropped_people", "{:.0f}"), ("  of them lost %", "dropped_lost_pct", "{:.1f}"),
             ("  their total wait s", "dropped_wait_s", "{:.1f}")]
ROWS = [("offered", "offered", "{:.0f}"), ("answered", "answered", "{:.0f}"),
        ("abandoned %", "abandoned_pct", "{:.1f}"), ("ASA s", "asa_s", "{:.1f}"),
        ("service level % (20 s)", "sl_pct", "{:.1f}"),
        ("avg wait s", "avg_wait_s", "{:.1f}"), ("p90 wait s", "p90_wait_s", "{:.1f}"),
        ("waiting at end", "waiting_end", "{:.0f}"), ("finished in self-service", "self_service", "{:.0f}"),
        ("served", "served", "{:.0f}"), ("notified, did not call", "notified_no_call", "{:.0f}"),
        ("notice transfers", "transfers", "{:.0f}"), ("callbacks offered", "cb_offered", "{:.0f}"),
        ("callbacks requested", "cb_requested", "{:.0f}"), ("callbacks made", "cb_made", "{:.0f}"),
        ("callbacks kept (promise)", "cb_kept", "{:.0f}"), ("callbacks kept %", "cb_kept_pct", "{:.1f}"),
        ("callbacks pending at end", "cb_pending_end", "{:.0f}"), ("callback promise avg s", "cb_promise_avg_s", "{:.0f}"),
        ("callback wait avg s", "cb_wait_avg_s", "{:.0f}"),
        ("occupancy core %", "occ_core_pct", "{:.1f}"), ("occupancy volunteer %", "occ_volunteer_pct", "{:.1f}"),
        ("occupancy novice %", "occ_novice_pct", "{:.1f}"), ("estimate MAE s (policy)", "est_mae_s", "{:.1f}"),
        ("estimate bias s (policy)", "est_bias_s", "{:+.1f}"), ("estimate MAE s (Asterisk)", "ast_mae_s", "{:.1f}"),
        ("estimate bias s (Asterisk)", "ast_bias_s", "{:+.1f}"),
        ("estimate MAE s (shared queues)", "shared_mae_s", "{:.1f}"), ("estimate bias s (shared queues)", "shared_bias_s", "{:+.1f}"),
        ("estimate MAE s (leavers out)", "stay_mae_s", "{:.1f}"), ("estimate bias s (leavers out)", "stay_bias_s", "{:+.1f}"),
        ("estimate MAE s (Erlang C)", "erlc_mae_s", "{:.1f}"),
        ("estimate bias s (Erlang C)", "erlc_bias_s", "{:+.1f}"), ("agent-hours", "agent_hours", "{:.1f}")]


def format_table(results: dict[str, dict[str, Any]], title: str) -> str:
    """Side by side: one column per mode, and balanced / static when both ran."""
    modes = list(results)
    lines = [f"{title:<28}" + "".join(f"{m:>12}" for m in modes) + ("       ratio" if len(modes) == 2 else "")]
    rows = ROWS + (DROP_ROWS if any(r.get("drops") for r in results.values()) else [])
    for label, key, fmt in rows:
        vals = [results[m][key] for m in modes]
        ratio = "" if len(vals) != 2 else f"{vals[1] / vals[0]:>12.2f}" if vals[0] else f"{'-':>12}"
        lines.append(f"{label:<28}" + "".join(f"{fmt.format(v):>12}" for v in vals) + ratio)
    return "\n".join(lines)


def write_chart(path: str | Path, series: dict[str, list[float]], w: int = 720, h: int = 360) -> None:
    """Line chart as a PNG, pure Python (zlib + struct): red = first series, blue = second.
    Grid: a vertical line per hour, a horizontal line per 60 s of wait (per 600 s above 20 min)."""
    img, (left, bottom, top, right) = bytearray(b"\xff" * (w * h * 3)), (10, h - 10, 10, w - 10)
    ymax = max([60.0] + [v for s in series.values() for v in s]) * 1.05
    n = max([2] + [len(s) for s in series.values()])

    def px(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < w and 0 <= y < h:
            img[(y * w + x) * 3:(y * w + x) * 3 + 3] = bytes(c)

    def line(xa: float, ya: float, xb: float, yb: float, c: tuple[int, int, int], thick: int = 1) -> None:
        steps = int(max(abs(xb - xa), abs(yb - ya))) + 1
        for i in range(steps + 1):
            for d in range(thick):
                px(int(xa + (xb - xa) * i / steps), int(ya + (yb - ya) * i / steps) + d, c)

    def sx(i: float) -> float:
        return left + (right - left) * i / (n - 1)

    def sy(v: float) -> float:
        return bottom - (bottom - top) * v / ymax
    for v in range(0, int(ymax) + 1, 60 if ymax < 1200 else 600):
        line(left, sy(v), right, sy(v), (225, 225, 225))
    for i in range(n):
        line(sx(i), top, sx(i), bottom, (235, 235, 235))
    line(left, bottom, right, bottom, (0, 0, 0))
    line(left, top, left, bottom, (0, 0, 0))
    for s, c in zip(series.values(), [(220, 40, 40), (40, 80, 220), (40, 160, 40)]):
        for i in range(len(s) - 1):
            line(sx(i), sy(s[i]), sx(i + 1), sy(s[i + 1]), c, 2)
    raw = b"".join(b"\x00" + bytes(img[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def apply_variant(p: Profile, *, self_service: bool = True, notices: bool = True,
                  self_service_share: float | None = None, accept: float | None = None) -> Profile:
    """Switch the controller's levers on a profile (in place): self-service, notices, the overall
    self-service share (each branch's share scaled by the same factor) and callback acceptance."""
    p.menu_enabled = p.menu_enabled and self_service
    p.notices_enabled = p.notices_enabled and notices
    if self_service_share is not None:
        now = p.self_service_share() if p.menu_enabled else 0.0
        if not 0 <= self_service_share <= 1:
            raise ValueError("the self-service share must be between 0 and 1")
        if self_service_share > 0 and now == 0:
            raise ValueError("the profile has no self-service branch to scale (menu.self_service, or it is off)")
        f = self_service_share / now if now else 0.0
        if any(v * f > 1 for v in p.menu_self_service.values()):
            raise ValueError(f"a self-service share of {self_service_share:.0%} needs a branch above 100 %")
        p.menu_self_service = {k: v * f for k, v in p.menu_self_service.items()}
    if accept is not None:
        if not 0 <= accept <= 1:
            raise ValueError("the callback acceptance must be between 0 and 1")
        p.callback_accept = accept
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``ivr simulate``: run a profile in static and/or balanced mode and print the comparison."""
    ap = argparse.ArgumentParser(prog="ivr simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE), help="profile YAML (default: profiles/crisis-day.yaml)")
    ap.add_argument("--mode", choices=(*MODES, "both"), default="both")
    ap.add_argument("--seed", type=int, help="override the profile's seed")
    ap.add_argument("--hours", default="0-24", help="window A-B in hours of the day, B exclusive (default 0-24)")
    ap.add_argument("--tick", type=float, help="seconds between balancer decisions (default: the profile's, 1)")
    ap.add_argument("--drops", type=float, help="share of callers whose call drops while waiting (profile's: 0)")
    ap.add_argument("--no-place-keeping", action="store_true",
                    help="dropped callers who call again start at the end of the line (continuity off)")
    ap.add_argument("--no-self-service", action="store_true", help="the menu's self-service branches lead to agents")
    ap.add_argument("--no-notices", action="store_true", help="no notice campaign")
    ap.add_argument("--self-service-share", type=float,
                    help="share of all callers who finish in self-service (scales the profile's per-branch shares)")
    ap.add_argument("--accept", type=float, help="share of callers offered a callback who take it (profile's: 0.4)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--chart", help="write a PNG of the average wait per hour (red static, blue balanced)")
    args = ap.parse_args(argv)
    try:
        h0, h1 = (int(x) for x in args.hours.split("-"))
        if not 0 <= h0 < h1 <= 24:
            raise ValueError
    except ValueError:
        ap.error("--hours must be A-B with 0 <= A < B <= 24")
    p = load_profile(args.profile)
    if args.drops is not None:
        if not 0 <= args.drops <= 1:
            ap.error("--drops must be between 0 and 1")
        p.drop_share = args.drops
    if args.no_place_keeping:
        p.place_keeping = False
    try:
        apply_variant(p, self_service=not args.no_self_service, notices=not args.no_notices,
                      self_service_share=args.self_service_share, accept=args.accept)
    except ValueError as exc:
        ap.error(str(exc))
    res = run_modes(p, MODES if args.mode == "both" else (args.mode,), args.seed, (h0, h1), args.tick)
    if args.chart:
        write_chart(args.chart, {m: r["hourly_avg_wait_s"] for m, r in res["modes"].items()})
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    ms = res["modes"]
    print(format_table({m: r["overall"] for m, r in ms.items()}, f"{p.name} {h0:02d}-{h1:02d}h"))
    print("\n" + format_table({m: r["peak"] for m, r in ms.items()}, f"peak hour {res['peak_hour']:02d}:00"))
    print("\n" + "; ".join(f"{m}: {r['runtime_s']:.1f} s, {r['decisions']} decisions, {len(r['tier_events'])} tier "
                           f"changes" for m, r in ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
