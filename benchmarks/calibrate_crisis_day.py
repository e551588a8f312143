"""Find the crisis day's core roster: the smallest staffing, by shift, with which the STATIC line
(plain app_queue: every caller to an agent, no self-service, no callbacks, no notices) gives the
report's figures: 3,807 calls answered a day (+- 5 %) at a day-average ASA of 171 s (+- 15 %).

Greedy search over the shift counts (``SHIFTS``): start from one agent per shift; while the mean
over ``--seeds`` misses the box, add the agent (to the shift) that brings the figures closest to the
box per agent-hour added; once inside, remove any agent the box does not need. The volunteers
(2 teams of 2 experienced + 3 novices, 07:00-19:00) stay as in the profile: they are part of the
line in both modes. Prints every step, the roster found and the calibration table; ``--write``
puts the roster into the profile; ``--patience``/``--retry`` try another patience model, and
``--models`` runs the search for several and prints which report figure gives.

    .venv/bin/python benchmarks/calibrate_crisis_day.py                 # the profile's patience model
    .venv/bin/python benchmarks/calibrate_crisis_day.py --models        # which figure gives, per model
    .venv/bin/python benchmarks/calibrate_crisis_day.py --write         # store the roster found
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.devtools.sim_engine import Simulation  # noqa: E402
from ivr.devtools.sim_model import Profile, load_profile  # noqa: E402

PROFILE = ROOT / "profiles" / "crisis-day.yaml"
REPORT = {"answered": 3807.0, "asa_s": 171.0, "peak_inbound": 499.0}
ANSWERED_TOL, ASA_TOL = 0.05, 0.15
SHIFTS = [("night", 0, 7), ("early", 6, 14), ("day", 9, 17), ("mid", 12, 20), ("late", 15, 23), ("close", 22, 24)]
QUEUES = ["refunds", "rebooking", "support"]
MAX_STEPS = 120


def with_roster(p: Profile, counts: dict[str, int]) -> Profile:
    q = copy.copy(p)
    q.core = [{"name": n, "count": counts[n], "start": s, "end": e, "queues": QUEUES} for n, s, e in SHIFTS]
    return q


def static_day(p: Profile, seeds: list[int]) -> dict[str, float]:
    """The static line's day, mean over seeds (answered, day ASA, peak ASA, abandoned %, peak calls)."""
    rows = []
    for seed in seeds:
        sim = Simulation(p, "static", seed).run()
        day, peak = sim.summary(), sim.summary(10, 11)
        rows.append({"answered": day["answered"], "asa_s": day["asa_s"], "peak_asa_s": peak["asa_s"],
                     "abandoned_pct": day["abandoned_pct"], "lost_pct": day["lost_pct"], "offered": day["offered"],
                     "people": day["people"], "peak_offered": peak["offered"], "peak_people": peak["people"],
                     "agent_hours": day["agent_hours"]})
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} | {
        "asa_min": min(r["asa_s"] for r in rows), "asa_max": max(r["asa_s"] for r in rows),
        "answered_min": min(r["answered"] for r in rows), "answered_max": max(r["answered"] for r in rows)}


def miss(r: dict[str, float]) -> float:
    """How far the figures are outside the box (0 inside), in relative units."""
    lo_ans, hi_ans = REPORT["answered"] * (1 - ANSWERED_TOL), REPORT["answered"] * (1 + ANSWERED_TOL)
    lo_asa, hi_asa = REPORT["asa_s"] * (1 - ASA_TOL), REPORT["asa_s"] * (1 + ASA_TOL)
    return (max(0.0, lo_ans - r["answered"]) / lo_ans + max(0.0, r["answered"] - hi_ans) / hi_ans
            + max(0.0, r["asa_s"] - hi_asa) / hi_asa + max(0.0, lo_asa - r["asa_s"]) / lo_asa)


def hours(name: str) -> int:
    return next(e - s for n, s, e in SHIFTS if n == name)


def search(p: Profile, seeds: list[int], verbose: bool = True) -> tuple[dict[str, int], dict[str, float]]:
    counts = {n: 1 for n, _, _ in SHIFTS}
    best = static_day(with_roster(p, counts), seeds)
    for step in range(MAX_STEPS):
        m = miss(best)
        if verbose:
            print(f"  step {step:3d} {counts} answered {best['answered']:.0f} ASA {best['asa_s']:.0f} s "
                  f"miss {m:.3f}", flush=True)
        if m == 0:
            break
        trials = []
        for n in counts:
            for delta in (+1, -1):
                c = dict(counts, **{n: counts[n] + delta})
                if c[n] < 0 or (delta < 0 and best["asa_s"] > REPORT["asa_s"]):
                    continue
                r = static_day(with_roster(p, c), seeds)
                gain = (m - miss(r)) / hours(n)
                trials.append((miss(r) == 0, gain, -delta, n, c, r))
        inside = [t for t in trials if t[0]]
        pick = (min(inside, key=lambda t: t[5]["agent_hours"]) if inside
                else max(trials, key=lambda t: (t[1], t[2])))
        if not inside and pick[1] <= 0:
            print("  no step gets closer: the box cannot be reached with these shifts", flush=True)
            break
        counts, best = pick[4], pick[5]
    # the smallest staffing: drop any agent the box does not need
    changed = miss(best) == 0
    while changed:
        changed = False
        for n in sorted(counts, key=hours, reverse=True):
            if counts[n] == 0:
                continue
            c = dict(counts, **{n: counts[n] - 1})
            r = static_day(with_roster(p, c), seeds)
            if miss(r) == 0:
                counts, best, changed = c, r, True
                if verbose:
                    print(f"  drop one {n}: {counts} answered {r['answered']:.0f} ASA {r['asa_s']:.0f} s", flush=True)
                break
    return counts, best


def table(r: dict[str, float]) -> str:
    return "\n".join([
        "| | report | static line (model) |", "|---|---|---|",
        f"| answered a day | 3,807 | {r['answered']:.0f} ({r['answered_min']:.0f}-{r['answered_max']:.0f}) |",
        f"| day-average ASA s | 171 | {r['asa_s']:.0f} ({r['asa_min']:.0f}-{r['asa_max']:.0f}) |",
        f"| peak-hour ASA s | - | {r['peak_asa_s']:.0f} |",
        f"| calls offered (attempts) a day | - | {r['offered']:.0f} |",
        f"| callers (people) a day | 3,807 first calls (model input) | {r['people']:.0f} |",
        f"| peak hour inbound calls (attempts) | 499 | {r['peak_offered']:.0f} ({r['peak_people']:.0f} first calls) |",
        f"| abandoned calls % / callers lost % | - | {r['abandoned_pct']:.1f} / {r['lost_pct']:.1f} |",
        f"| agent-hours | - | {r['agent_hours']:.0f} |"])


def write_roster(counts: dict[str, int], path: Path = PROFILE) -> None:
    """Replace the profile's core roster lines (comments and the rest of the file kept)."""
    text = path.read_text(encoding="utf-8")
    lines = "".join(f"    - {{name: {n}, count: {counts[n]}, start: {s}, end: {e}, queues: [{', '.join(QUEUES)}]}}\n"
                    for n, s, e in SHIFTS if counts[n])
    new, k = re.subn(r"(  core:[^\n]*\n)(?:    - \{[^\n]*\n)+", lambda m: m.group(1) + lines, text)
    if k != 1:
        raise SystemExit(f"{path}: roster.core block not found")
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(PROFILE))
    ap.add_argument("--seeds", type=int, default=5, help="seeds per evaluation (1..N; default 5, as the targets)")
    ap.add_argument("--patience", type=float, help="mean patience s (default: the profile's)")
    ap.add_argument("--retry", type=float, help="share of abandoning callers who call again (default: the profile's)")
    ap.add_argument("--models", action="store_true", help="search for several patience models and compare")
    ap.add_argument("--write", action="store_true", help="write the roster found into the profile")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    p = load_profile(a.profile)
    seeds = list(range(1, a.seeds + 1))
    if a.patience:
        p.patience_mean_s = a.patience
    if a.retry is not None:
        p.retry_share = a.retry
    models = ([(380.0, 0.0), (1800.0, 0.0), (3600.0, 0.0), (380.0, 0.9), (380.0, 0.95), (600.0, 0.9), (900.0, 0.9)] if a.models
              else [(p.patience_mean_s, p.retry_share)])
    out = []
    for theta, retry in models:
        q = copy.copy(p)
        q.patience_mean_s, q.retry_share = theta, retry
        t0 = time.perf_counter()
        print(f"patience {theta:.0f} s, {retry:.0%} call again:", flush=True)
        counts, r = search(q, seeds, verbose=not a.models)
        ok = miss(r) == 0
        print(f"  -> {counts}: answered {r['answered']:.0f}, ASA {r['asa_s']:.0f} s, peak attempts "
              f"{r['peak_offered']:.0f}, {'inside the box' if ok else 'NOT inside the box'} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        out.append({"patience_s": theta, "retry_share": retry, "roster": counts, "inside": ok, **r})
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(table(out[-1]))
    if a.write:
        if not out[-1]["inside"]:
            print("not written: the search did not reach the report's figures", file=sys.stderr)
            return 1
        write_roster(out[-1]["roster"], Path(a.profile))
        print(f"roster written to {a.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
