"""The simulator's world: the profile (a crisis day as data), the roster by shift and the callers.

``load_profile`` reads ``profiles/*.yaml``; ``make_callers`` draws one day's callers (arrival, branch,
patience, handle time, callback and notice draws) from per-hour random streams, so both modes of a run
meet the same callers (common random numbers); ``apply_variant`` switches the controller's levers.
The engine that runs them is ivr/devtools/sim_engine.py."""


from __future__ import annotations

import math, random  # noqa: E401
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..balance.menu_mix import QUEUE as ROUTE_QUEUE, SELF_SERVICE, Route, check_shares, load_routes
from ..balance.policy import (SKILL_EXPERIENCED, SKILL_NOVICE, TIER_CORE, TIER_VOLUNTEER, AgentView, Policy)

MODES = ("static", "balanced")
WAITING, ANSWERED, ABANDONED, CALLBACK, DROPPED = "waiting", "answered", "abandoned", "callback", "dropped"
SELF_SERVED, NOTIFIED, IN_MENU = "self_service", "notified", "in_menu"
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


def lognormal(rng: random.Random, mean: float, cv: float) -> float:
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
                       lognormal(rng, p.handle_mean_s, p.handle_cv),
                       lognormal(rng, p.handle_mean_s, p.handle_cv), rng.random())
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

