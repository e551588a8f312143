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

import heapq
import math
import random
import time
from collections import deque
from typing import Any, Sequence

from ..balance import forecast
from ..balance.erlang import average_speed_of_answer
from ..balance.menu_mix import CALLBACK as ROUTE_CALLBACK
from ..balance.menu_mix import SELF_SERVICE
from ..balance.policy import (SKILL_NOVICE, CallbackView, QueueView, Snapshot, TierState, decide, estimated_wait,
                              shared_callers)
from .sim_model import (ABANDONED, ANSWERED, CALLBACK, DEFAULT_AHT, DROPPED, IN_MENU, MODES, NOTICE_CAMPAIGN,
                        NOTIFIED, RATE_WINDOW_S, SELF_SERVED, WAITING, Agent, Caller, Profile, QState, build_roster,
                        lognormal, make_callers)
from .sim_summary import overlap, summarise

_LOGIN, _LOGOUT, _ARRIVE, _END, _ABANDON, _CB_ANSWER, _DROP, _JOIN, _NOTICE = range(9)


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
                    agents[h] += w * overlap(s, e, h * 3600.0, (h + 1) * 3600.0) / 3600.0
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
            handle = lognormal(self.notice_rng, self.p.handle_mean_s, self.p.handle_cv)
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
        (c.root or c).last = r
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
                (c.root or c).last = r
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
        return summarise(self.callers, self.agents, self.p, lo, hi)

def estimate_with_leavers(q: QueueView, shared_ahead: float, stay: float) -> float:
    """The policy's estimate with the callers ahead (this queue's and, shared, the other queues')
    thinned to the share who lately stayed until answered."""
    ahead = (q.waiting + shared_ahead) * stay + 1 - q.free
    if ahead <= 0:
        return 0.0
    return math.inf if q.serving == 0 else ahead * q.aht / q.serving


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

