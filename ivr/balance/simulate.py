"""Surge simulator: one crisis day (or a window of it) of the call centre, two ways.

Design
------
A discrete-event simulation (``heapq`` of ``(time, seq, kind, payload)``, seeded
``random.Random``) of callers, queues and agents, with the balancer's clock tick
interleaved: every ``tick`` seconds the ``balanced`` mode builds a ``Snapshot``
the way the live loop does (waiting, longest wait, free/serving members with their
penalties, answered / answered-in-target over a sliding window, measured AHT,
tier states, pending callbacks) and runs the real, unmodified ``policy.decide``,
then applies its actions (members added/removed/re-penalised, tiers, callbacks).
``static`` is app_queue with a fixed setup: every logged-in agent (volunteers and
novices too) is a penalty-0 member of all their queues, no callbacks, no policy.
Both modes use the same roster and shifts (equal agent-hours) and the same callers:
arrivals, patience and handle-time draws come from per-hour random streams that do
not depend on the mode (common random numbers), so the ratio column is not noise.

Routing is app_queue-like: an arriving caller goes to the free member with the lowest
penalty (then the longest idle); an agent who becomes free takes the longest-waiting
caller among the queues they are a member of. Handle time is lognormal (mean, CV),
novices are ``novice_factor`` slower; patience is exponential; abandoned callers may
retry. A caller whose estimated wait (``policy.estimated_wait``, the menu's figure)
exceeds the callback threshold accepts a callback with ``accept_share`` probability
(balanced only); a dispatched callback occupies the agent for one handle time.

Metric definitions: ASA = mean wait of answered callers; avg/p90 wait are over every
caller who queued (answered or abandoned); SL = answered within the target / answered;
offered = answered + abandoned + waiting at the end + callbacks requested. Estimate
error compares, per answered caller, the estimate at arrival with the real wait, for
the policy's estimate and for Asterisk's ``holdtime`` ((3*old + new) / 4 per answer).
"""

from __future__ import annotations

import argparse, heapq, json, math, random, struct, sys, time, zlib  # noqa: E401
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from .policy import (SKILL_EXPERIENCED, SKILL_NOVICE, TIER_CORE, TIER_VOLUNTEER, AgentView, CallbackView,
                     Policy, QueueView, Snapshot, TierState, decide, estimated_wait)

MODES = ("static", "balanced")
WAITING, ANSWERED, ABANDONED, CALLBACK = "waiting", "answered", "abandoned", "callback"
_LOGIN, _LOGOUT, _ARRIVE, _END, _ABANDON = range(5)
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "default.yaml"


@dataclass
class Profile:
    """A day to simulate; see ``profiles/default.yaml`` for every field."""
    arrivals_per_hour: list[float]
    queues: dict[str, float]
    core: list[dict[str, Any]]
    name: str = "profile"
    seed: int = 1
    volunteers: dict[str, Any] = field(default_factory=dict)
    handle_mean_s: float = 171.0
    handle_cv: float = 0.6
    novice_factor: float = 1.3
    patience_mean_s: float = 240.0
    retry_share: float = 0.0
    retry_after_s: float = 600.0
    sl_target_s: float = 20.0
    sl_window_s: float = 900.0
    callback_threshold_s: float = 300.0
    callback_accept: float = 0.4
    callback_promise_s: float = 7200.0
    tick_s: float = 1.0
    policy: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        known = {f.name for f in fields(cls)}
        flat = dict(d)
        for section in ("handle", "patience", "callback"):   # handle: {mean_s: ..} -> handle_mean_s
            for k, v in (flat.pop(section, None) or {}).items():
                flat[k if k in known else f"{section}_{k}"] = v
        roster = flat.pop("roster", None) or {}
        flat.setdefault("core", roster.get("core", []))
        flat.setdefault("volunteers", roster.get("volunteers") or {})
        unknown = set(flat) - known
        if unknown:
            raise ValueError(f"unknown profile keys: {sorted(unknown)}")
        return cls(**flat)

    def make_policy(self) -> Policy:
        return Policy(**{"simple_queues": ("refunds",), **self.policy})


def load_profile(path: str | Path) -> Profile:
    import yaml  # PyYAML: already a project dependency
    return Profile.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


@dataclass(slots=True, eq=False)
class Caller:
    id: int
    queue: str
    t: float                      # arrival
    patience: float
    handle: float                 # base handle time (experienced agent)
    cb_handle: float              # handle time of the callback call, if any
    u_cb: float                   # uniform draw: accepts a callback if < accept share
    attempt: int = 1
    outcome: str = WAITING
    wait: float = 0.0
    est: float = 0.0              # policy's estimated wait at arrival
    est_ast: float = 0.0          # Asterisk's holdtime at arrival
    cb_offered: bool = False
    cb_at: float | None = None    # when the callback was made


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
    on_callback: bool = False
    current: str = ""             # queue of the call in progress
    idle_since: float = 0.0
    calls: list[tuple[float, float]] = field(default_factory=list)
    on: list[list[float]] = field(default_factory=list)

    def view(self) -> AgentView:
        return AgentView(self.id, self.interface, self.skill, self.team, self.tier, self.queues,
                         self.logged_in, busy=self.busy)


@dataclass(slots=True, eq=False)
class QState:
    name: str
    line: deque[Caller] = field(default_factory=deque)
    waiting: int = 0
    members: dict[str, int] = field(default_factory=dict)
    answered: deque[tuple[float, bool]] = field(default_factory=deque)
    in_target: int = 0
    handled: deque[tuple[float, float]] = field(default_factory=deque)
    handled_sum: float = 0.0
    holdtime: int = 0             # app_queue's moving average, integer seconds


def build_roster(p: Profile) -> list[Agent]:
    """Core agents by shift, then volunteer teams of 2 experienced + 3 novices."""
    out: list[Agent] = []
    for s in p.core:
        for i in range(int(s["count"])):
            aid = f"{s.get('name', 'core')}{i + 1}"
            out.append(Agent(aid, f"PJSIP/{aid}", s.get("skill", SKILL_EXPERIENCED), s.get("tier", TIER_CORE), "",
                             tuple(s["queues"]), [(s["start"] * 3600.0, s["end"] * 3600.0)]))
    v = p.volunteers
    for t in range(int(v.get("teams", 0))):
        for i in range(int(v.get("experienced", 2)) + int(v.get("novices", 3))):
            skill = SKILL_EXPERIENCED if i < int(v.get("experienced", 2)) else SKILL_NOVICE
            aid = f"team{t + 1}-{skill[0]}{i + 1}"
            out.append(Agent(aid, f"PJSIP/{aid}", skill, TIER_VOLUNTEER, f"team{t + 1}", tuple(v["queues"]),
                             [(v["start"] * 3600.0, v["end"] * 3600.0)]))
    return out


def _lognormal(rng: random.Random, mean: float, cv: float) -> float:
    s2 = math.log(1.0 + cv * cv)
    return rng.lognormvariate(math.log(mean) - s2 / 2.0, math.sqrt(s2))


def make_callers(p: Profile, seed: int, h0: int, h1: int) -> list[Caller]:
    """Non-homogeneous Poisson arrivals, one stream per hour (a window sees the day's callers)."""
    names, shares = list(p.queues), list(p.queues.values())
    out: list[Caller] = []
    for h in range(h0, h1):
        rng, rate = random.Random(f"{seed}:{h}"), p.arrivals_per_hour[h] / 3600.0
        t = h * 3600.0
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= (h + 1) * 3600.0:
                break
            out.append(Caller(len(out), rng.choices(names, shares)[0], t, rng.expovariate(1.0 / p.patience_mean_s),
                              _lognormal(rng, p.handle_mean_s, p.handle_cv),
                              _lognormal(rng, p.handle_mean_s, p.handle_cv), rng.random()))
    return out


class Simulation:
    """One mode over hours [h0, h1) of a profile. ``run()`` returns ``self``; see ``summary``."""

    def __init__(self, p: Profile, mode: str, seed: int | None = None, hours: tuple[int, int] = (0, 24),
                 tick: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.p, self.mode, self.policy = p, mode, p.make_policy()
        self.seed = p.seed if seed is None else seed
        self.h0, self.h1 = hours
        self.start, self.end = self.h0 * 3600.0, self.h1 * 3600.0
        self.tick = p.tick_s if tick is None else tick
        self.rng = random.Random(f"{self.seed}:{mode}:retry")
        self.callers = make_callers(p, self.seed, self.h0, self.h1)
        self.agents = build_roster(p)
        self.by_if = {a.interface: a for a in self.agents}
        self.views = {a.id: a.view() for a in self.agents}
        self.queues = {n: QState(n) for n in p.queues}
        self.tiers: dict[str, TierState] = {}
        self.tier_log: list[tuple[float, str, str]] = []
        self.pending: dict[str, Caller] = {}
        self.cb_in_progress = 0
        self.decisions = 0
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
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
        next_tick = self.start if self.mode == "balanced" else math.inf
        while True:
            t_ev = self.heap[0][0] if self.heap else math.inf
            now = min(t_ev, next_tick)
            if now >= self.end:
                break
            if t_ev <= next_tick:
                _, _, kind, obj = heapq.heappop(self.heap)
                (self._login, self._logout, self._arrive, self._end_call, self._abandon)[kind](obj, now)
            else:
                self._tick(now)
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
                self._route(self.queues[q], now)

    def _logout(self, a: Agent, now: float) -> None:
        self._set(a, logged_in=False)
        a.on[-1][1] = now
        if self.mode == "static":
            for q in a.queues:
                self.queues[q].members.pop(a.interface, None)

    def _arrive(self, c: Caller, now: float) -> None:
        q = self.queues[c.queue]
        c.est, c.est_ast = estimated_wait(self._queue_view(q, now)), float(q.holdtime)
        if self.mode == "balanced" and c.est > self.p.callback_threshold_s:
            c.cb_offered = True
            if c.u_cb < self.p.callback_accept:
                c.outcome = CALLBACK
                self.pending[str(c.id)] = c
                return
        q.line.append(c)
        q.waiting += 1
        self._push(now + c.patience, _ABANDON, c)
        self._route(q, now)

    def _abandon(self, c: Caller, now: float) -> None:
        if c.outcome != WAITING:
            return
        c.outcome, c.wait = ABANDONED, now - c.t
        self.queues[c.queue].waiting -= 1
        if self.p.retry_share > 0 and self.rng.random() < self.p.retry_share:
            r = Caller(len(self.callers), c.queue, now + self.rng.expovariate(1.0 / self.p.retry_after_s),
                       self.rng.expovariate(1.0 / self.p.patience_mean_s), c.handle, c.cb_handle, c.u_cb,
                       c.attempt + 1)
            if r.t < self.end:
                self.callers.append(r)
                self._push(r.t, _ARRIVE, r)

    def _end_call(self, a: Agent, now: float) -> None:
        if a.on_callback:
            self.cb_in_progress -= 1
        done = self.queues[a.current]
        done.handled.append((now, now - a.calls[-1][0]))   # measured AHT: calls ended in the window
        done.handled_sum += done.handled[-1][1]
        self._set(a, busy=False, on_callback=False, idle_since=now)
        if not a.logged_in:
            a.on[-1][1] = now                 # worked past the end of the shift
            return
        best: tuple[float, QState] | None = None
        for name in a.queues:
            q = self.queues[name]
            if a.interface in q.members and self._head(q) and (best is None or q.line[0].t < best[0]):
                best = (q.line[0].t, q)
        if best:
            self._answer(best[1], a, now)

    # ----------------------------------------------------------------- routing
    def _head(self, q: QState) -> Caller | None:
        while q.line and q.line[0].outcome != WAITING:
            q.line.popleft()
        return q.line[0] if q.line else None

    def _free_member(self, q: QState) -> Agent | None:
        best, key = None, (math.inf, math.inf)
        for iface, pen in q.members.items():
            a = self.by_if[iface]
            if a.logged_in and not a.busy and (pen, a.idle_since) < key:
                best, key = a, (pen, a.idle_since)
        return best

    def _start_call(self, a: Agent, q: QState, handle: float, now: float, callback: bool = False) -> None:
        handle *= self.p.novice_factor if a.skill == SKILL_NOVICE else 1.0
        self._set(a, busy=True, on_callback=callback, current=q.name)
        a.calls.append((now, now + handle))
        self._push(now + handle, _END, a)

    def _answer(self, q: QState, a: Agent, now: float) -> None:
        c = q.line.popleft()
        q.waiting -= 1
        c.outcome, c.wait = ANSWERED, now - c.t
        q.answered.append((now, c.wait <= self.p.sl_target_s))
        q.in_target += c.wait <= self.p.sl_target_s
        q.holdtime = (3 * q.holdtime + int(c.wait)) >> 2
        self._start_call(a, q, c.handle, now)

    def _route(self, q: QState, now: float) -> None:
        while self._head(q):
            a = self._free_member(q)
            if a is None:
                return
            self._answer(q, a, now)

    def _queue_view(self, q: QState, now: float) -> QueueView:
        cut = now - self.p.sl_window_s
        while q.answered and q.answered[0][0] < cut:
            q.in_target -= q.answered.popleft()[1]
        while q.handled and q.handled[0][0] < cut:
            q.handled_sum -= q.handled.popleft()[1]
        serving = [self.by_if[i] for i in q.members if self.by_if[i].logged_in]
        head = self._head(q)
        return QueueView(q.name, q.waiting, now - head.t if head else 0.0, len(q.answered), q.in_target,
                         q.handled_sum / len(q.handled) if len(q.handled) >= 5 else self.p.handle_mean_s,
                         dict(q.members),
                         sum(1 for a in serving if not a.busy), len(serving))

    # -------------------------------------------------------------- the policy
    def _tick(self, now: float) -> None:
        snap = Snapshot(now, {n: self._queue_view(q, now) for n, q in self.queues.items()}, self.views,
                        dict(self.tiers), tuple(CallbackView(k, c.queue, c.t) for k, c in self.pending.items()),
                        self.cb_in_progress)
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
        for name in sorted(touched):
            self._route(self.queues[name], now)
        for act in d.actions:
            if act.kind == "dispatch_callback" and act.callback_id in self.pending:
                a = self._free_member(self.queues[act.queue])
                if a is not None and not self._head(self.queues[act.queue]):
                    c = self.pending.pop(act.callback_id)
                    c.cb_at = now
                    self.cb_in_progress += 1
                    self._start_call(a, self.queues[act.queue], c.cb_handle, now, callback=True)

    # ----------------------------------------------------------------- metrics
    def summary(self, h0: float | None = None, h1: float | None = None) -> dict[str, Any]:
        """Metrics for callers who arrived in hours [h0, h1) (default: the whole window)."""
        lo, hi = (self.start if h0 is None else h0 * 3600.0), (self.end if h1 is None else h1 * 3600.0)
        cs = [c for c in self.callers if lo <= c.t < hi]
        ans = [c for c in cs if c.outcome == ANSWERED]
        queued = sorted(c.wait for c in cs if c.outcome in (ANSWERED, ABANDONED))
        cbs = [c for c in cs if c.outcome == CALLBACK]
        made = [c.cb_at - c.t for c in cbs if c.cb_at is not None]
        n_ab = sum(c.outcome == ABANDONED for c in cs)
        est = [c for c in ans if math.isfinite(c.est)]
        out: dict[str, Any] = {
            "offered": len(cs), "answered": len(ans), "abandoned": n_ab,
            "abandoned_pct": 100.0 * n_ab / len(cs) if cs else 0.0,
            "waiting_end": sum(c.outcome == WAITING for c in cs), "retries": sum(c.attempt > 1 for c in cs),
            "asa_s": _mean([c.wait for c in ans]),
            "sl_pct": 100.0 * sum(c.wait <= self.p.sl_target_s for c in ans) / len(ans) if ans else 0.0,
            "avg_wait_s": _mean(queued), "p90_wait_s": queued[int(0.9 * (len(queued) - 1))] if queued else 0.0,
            "cb_offered": sum(c.cb_offered for c in cs), "cb_requested": len(cbs), "cb_made": len(made),
            "cb_kept": sum(w <= self.p.callback_promise_s for w in made), "cb_pending_end": len(cbs) - len(made),
            "cb_wait_avg_s": _mean(made),
            "est_mae_s": _mean([abs(c.est - c.wait) for c in est]), "est_bias_s": _mean([c.est - c.wait for c in est]),
            "est_infinite": len(ans) - len(est),
            "ast_mae_s": _mean([abs(c.est_ast - c.wait) for c in ans]),
            "ast_bias_s": _mean([c.est_ast - c.wait for c in ans]),
        }
        for label, pick in (("core", lambda a: a.tier == TIER_CORE), ("volunteer", lambda a: a.tier == TIER_VOLUNTEER),
                            ("novice", lambda a: a.skill == SKILL_NOVICE)):
            grp = [a for a in self.agents if pick(a)]
            on = sum(_overlap(s, e, lo, hi) for a in grp for s, e in a.on)
            out[f"occ_{label}_pct"] = 100.0 * sum(_overlap(s, e, lo, hi) for a in grp for s, e in a.calls) / on if on else 0.0
        out["agent_hours"] = sum(_overlap(s, e, lo, hi) for a in self.agents for s, e in a.shifts) / 3600.0
        return out

    def hourly_wait(self) -> list[float]:
        """Average time in queue of the callers who arrived in each hour of the window."""
        return [self.summary(h, h + 1)["avg_wait_s"] for h in range(self.h0, self.h1)]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _overlap(s: float, e: float, lo: float, hi: float) -> float:
    return max(0.0, min(e, hi) - max(s, lo))


def peak_hour(p: Profile, h0: int = 0, h1: int = 24) -> int:
    return max(range(h0, h1), key=lambda h: p.arrivals_per_hour[h])


# ------------------------------------------------------------------- output
ROWS = [("offered", "offered", "{:.0f}"), ("answered", "answered", "{:.0f}"), ("abandoned %", "abandoned_pct", "{:.1f}"),
        ("ASA s", "asa_s", "{:.1f}"), ("service level % (20 s)", "sl_pct", "{:.1f}"), ("avg wait s", "avg_wait_s", "{:.1f}"),
        ("p90 wait s", "p90_wait_s", "{:.1f}"), ("waiting at end", "waiting_end", "{:.0f}"),
        ("callbacks offered", "cb_offered", "{:.0f}"), ("callbacks requested", "cb_requested", "{:.0f}"),
        ("callbacks made", "cb_made", "{:.0f}"), ("callbacks kept (promise)", "cb_kept", "{:.0f}"),
        ("callback wait avg s", "cb_wait_avg_s", "{:.0f}"), ("occupancy core %", "occ_core_pct", "{:.1f}"),
        ("occupancy volunteer %", "occ_volunteer_pct", "{:.1f}"), ("occupancy novice %", "occ_novice_pct", "{:.1f}"),
        ("estimate MAE s (policy)", "est_mae_s", "{:.1f}"), ("estimate bias s (policy)", "est_bias_s", "{:+.1f}"),
        ("estimate MAE s (Asterisk)", "ast_mae_s", "{:.1f}"), ("estimate bias s (Asterisk)", "ast_bias_s", "{:+.1f}"),
        ("agent-hours", "agent_hours", "{:.1f}")]


def format_table(results: dict[str, dict[str, Any]], title: str) -> str:
    modes = list(results)
    lines = [f"{title:<28}" + "".join(f"{m:>12}" for m in modes) + ("       ratio" if len(modes) == 2 else "")]
    for label, key, fmt in ROWS:
        vals = [results[m][key] for m in modes]
        row = f"{label:<28}" + "".join(f"{fmt.format(v):>12}" for v in vals)
        if len(vals) == 2:
            row += f"{vals[1] / vals[0]:>12.2f}" if vals[0] else f"{'-':>12}"
        lines.append(row)
    return "\n".join(lines)


def run_modes(p: Profile, modes: Sequence[str] = MODES, seed: int | None = None,
              hours: tuple[int, int] = (0, 24), tick: float | None = None) -> dict[str, Any]:
    """Run the modes; a JSON-ready dict with overall, peak-hour and hourly figures per mode."""
    peak = peak_hour(p, *hours)
    out: dict[str, Any] = {"profile": p.name, "seed": p.seed if seed is None else seed, "hours": list(hours),
                           "peak_hour": peak, "modes": {}}
    for m in modes:
        sim = Simulation(p, m, seed, hours, tick).run()
        out["modes"][m] = {"overall": sim.summary(), "peak": sim.summary(peak, peak + 1),
                           "hourly_avg_wait_s": sim.hourly_wait(), "tier_events": sim.tier_log,
                           "decisions": sim.decisions, "runtime_s": sim.runtime_s}
    return out


_DIGITS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
           "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111"]


def write_chart(path: str | Path, series: dict[str, list[float]], x0: int = 0, w: int = 720, h: int = 360) -> None:
    """Line chart as a PNG (pure Python: zlib + struct). Red = first series, blue = second.
    Vertical grid = hours (labelled), horizontal grid = 60 s steps (labelled in s)."""
    img = bytearray(b"\xff" * (w * h * 3))
    left, bottom, top, right = 40, h - 20, 10, w - 10
    ymax = max(60.0, max((v for s in series.values() for v in s), default=0.0)) * 1.05
    n = max((len(s) for s in series.values()), default=1)

    def px(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < w and 0 <= y < h:
            img[(y * w + x) * 3:(y * w + x) * 3 + 3] = bytes(c)

    def text(x: int, y: int, s: str) -> None:
        for k, ch in enumerate(s):
            for b, on in enumerate(_DIGITS[int(ch)]):
                if on == "1":
                    px(x + 4 * k + b % 3, y + b // 3, (0, 0, 0))

    def line(xa: float, ya: float, xb: float, yb: float, c: tuple[int, int, int], thick: int = 1) -> None:
        steps = int(max(abs(xb - xa), abs(yb - ya))) + 1
        for i in range(steps + 1):
            x, y = xa + (xb - xa) * i / steps, ya + (yb - ya) * i / steps
            for d in range(thick):
                px(int(x), int(y) + d, c)

    sx = lambda i: left + (right - left) * i / max(1, n - 1)  # noqa: E731
    sy = lambda v: bottom - (bottom - top) * v / ymax  # noqa: E731
    for v in range(0, int(ymax) + 1, 60 if ymax < 1200 else 300):
        line(left, sy(v), right, sy(v), (225, 225, 225))
        text(2, int(sy(v)) - 2, str(v))
    for i in range(n):
        line(sx(i), top, sx(i), bottom, (235, 235, 235))
        text(int(sx(i)) - 3, bottom + 6, str(x0 + i))
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


def main(argv: Sequence[str] | None = None) -> int:
    """``ivr simulate``: run a profile in static and/or balanced mode and print the comparison."""
    ap = argparse.ArgumentParser(prog="ivr simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE))
    ap.add_argument("--mode", choices=(*MODES, "both"), default="both")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--hours", default="0-24", help="window A-B (hours of the day, B exclusive)")
    ap.add_argument("--tick", type=float, help="seconds between balancer decisions (profile default: 1)")
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
    res = run_modes(p, MODES if args.mode == "both" else (args.mode,), args.seed, (h0, h1), args.tick)
    if args.chart:
        write_chart(args.chart, {m: r["hourly_avg_wait_s"] for m, r in res["modes"].items()}, h0)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    ms = res["modes"]
    print(format_table({m: r["overall"] for m, r in ms.items()}, f"{p.name} {h0:02d}-{h1:02d}h"))
    print()
    print(format_table({m: r["peak"] for m, r in ms.items()}, f"peak hour {res['peak_hour']:02d}:00"))
    print("\n" + "  ".join(f"{m}: {r['runtime_s']:.1f}s run, {len(r['tier_events'])} tier changes" for m, r in ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
