"""How long one ``policy.decide()`` takes on a big surge snapshot (target: under 2 ms).

Builds one snapshot the size of a bad hour on a big node -- by default 1,000 waiting callers
over 5 queues, 300 agents (core experienced and novices, volunteer teams of 2 experienced +
3 novices; each in 2-4 queues; most busy, a few paused or logged out), 200 pending callbacks,
the overflow tier open on the busiest queues and the members a few changes away from what
the policy wants (so the decision has real work: adds, removals, penalties, dispatches) --
then times ``decide()`` with ``time.perf_counter_ns`` after a warm-up and prints the median
and the 99th percentile.

    python benchmarks/decide_timing.py [--waiting 1000] [--agents 300] [--runs 2000] [--json]

``--mean-only-estimate`` times the same snapshot with ``policy.estimated_wait`` replaced by
the closed-form mean ``(waiting + 1 - free) * aht / serving`` (what ``estimate_wait(...).seconds``
equals when no abandonment rate is given), to measure the change proposed for policy.py:
``estimate_wait`` also computes the 20th/80th percentiles by bisection, which decide() discards.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.balance import policy as pol  # noqa: E402
from ivr.balance.policy import (SKILL_EXPERIENCED, SKILL_NOVICE, TIER_CORE, TIER_VOLUNTEER,  # noqa: E402
                                AgentView, CallbackView, Policy, QueueView, Snapshot, TierState, decide)

QUEUES = ("refunds", "rebooking", "support", "baggage", "vip")
SHARES = (0.40, 0.25, 0.15, 0.12, 0.08)
POLICY = Policy(simple_queues=("refunds", "baggage"))


def build_snapshot(n_waiting: int, n_agents: int, n_callbacks: int = 200, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    now = 36_000.0
    agents: dict[str, AgentView] = {}
    n_volunteers = (n_agents // 2) // 5 * 5
    for i in range(n_agents):
        if i < n_agents - n_volunteers:               # core: 85 % experienced
            skill = SKILL_EXPERIENCED if rng.random() < 0.85 else SKILL_NOVICE
            tier, team = TIER_CORE, ""
        else:                                          # volunteer teams: 2 experienced + 3 novices
            k = i - (n_agents - n_volunteers)
            skill = SKILL_EXPERIENCED if k % 5 < 2 else SKILL_NOVICE
            tier, team = TIER_VOLUNTEER, f"team{k // 5 + 1}"
        queues = tuple(sorted(rng.sample(QUEUES, rng.randint(2, 4))))
        r = rng.random()
        agents[f"a{i}"] = AgentView(f"a{i}", f"PJSIP/a{i}", skill, team, tier, queues, logged_in=r > 0.03,
                                    paused=0.03 < r < 0.07, busy=rng.random() < 0.9)
    tiers = {q: TierState(open=q in QUEUES[:3], since=now - 600.0) for q in QUEUES}
    base = {q: QueueView(q) for q in QUEUES}
    wanted = decide(Snapshot(now, base, agents, tiers), POLICY).desired
    queues: dict[str, QueueView] = {}
    left = n_waiting
    for j, (q, share) in enumerate(zip(QUEUES, SHARES)):
        waiting = left if j == len(QUEUES) - 1 else round(n_waiting * share)
        left -= waiting
        members = dict(wanted[q])
        for iface in list(members)[: max(1, len(members) // 20)]:   # ~5 % drift: removed or re-penalised
            if rng.random() < 0.5:
                del members[iface]
            else:
                members[iface] += 1
        views = [agents[iface.split("/", 1)[1]] for iface in members]
        serving = [a for a in views if a.logged_in and not a.paused and a.reachable]
        queues[q] = QueueView(q, waiting, longest_wait=240.0, answered=200, answered_in_target=40, aht=185.0,
                              members=members, free=sum(not a.busy for a in serving), serving=len(serving))
    callbacks = tuple(CallbackView(f"cb{i}", rng.choice(QUEUES), now - rng.uniform(0, 7200))
                      for i in range(n_callbacks))
    return Snapshot(now, queues, agents, tiers, callbacks, callbacks_in_progress=2)


def mean_only_estimate(q: QueueView) -> float:
    ahead = q.waiting + 1 - q.free
    if ahead <= 0:
        return 0.0
    return math.inf if q.serving == 0 else ahead * q.aht / q.serving


def time_decide(snap: Snapshot, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        decide(snap, POLICY)
    samples = []
    gc.disable()
    try:
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            decide(snap, POLICY)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    samples.sort()
    return {"median_ms": statistics.median(samples) / 1e6,
            "p99_ms": samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)] / 1e6,
            "min_ms": samples[0] / 1e6, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waiting", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=300)
    ap.add_argument("--callbacks", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--target-ms", type=float, default=2.0)
    ap.add_argument("--mean-only-estimate", action="store_true",
                    help="time with the closed-form mean estimate proposed for policy.estimated_wait")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    snap = build_snapshot(args.waiting, args.agents, args.callbacks)
    if args.mean_only_estimate:
        pol.estimated_wait = mean_only_estimate          # decide() looks the name up at call time
    d = decide(snap, POLICY)
    res = time_decide(snap, args.runs, args.warmup)
    res.update(waiting=sum(q.waiting for q in snap.queues.values()), agents=len(snap.agents),
               queues=len(snap.queues), callbacks=len(snap.callbacks), actions=len(d.actions),
               estimate="mean-only" if args.mean_only_estimate else "policy.estimated_wait",
               target_ms=args.target_ms, within_target=res["p99_ms"] < args.target_ms)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"decide(): {res['waiting']} waiting over {res['queues']} queues, {res['agents']} agents, "
              f"{res['callbacks']} callbacks, {res['actions']} actions per decision ({res['estimate']})")
        print(f"median {res['median_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  min {res['min_ms']:.3f} ms  "
              f"over {res['runs']} runs -> target {args.target_ms:g} ms "
              f"{'met' if res['within_target'] else 'MISSED'} (p99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
