"""The crisis day, static line against the controller, over several seeds: the tables of docs/crisis-day.md.

Runs ``profiles/crisis-day.yaml`` (calibrated: benchmarks/calibrate_crisis_day.py) through the surge
simulator, seeds 1..N (default 5), on two cores:

* the targets table: STATIC (plain app_queue, every caller to an agent) against CONTROLLER (the
  whole line: the menu's self-service, the notice campaign, callbacks with forecast promises, the
  balancing policy), the day and the peak hour, mean and range over the seeds;
* the same with self-service and notices off (routing and callbacks alone);
* a sensitivity table over the self-service share (0, 20, 40 % of callers) and the callback
  acceptance (20, 40, 60 %), notices as in the profile;
* the wait estimators against the waits callers had (the one the menu speaks is chosen from this);
* a chart of the average wait by hour, static against controller (SVG, ``--chart``).

    .venv/bin/python benchmarks/crisis_day.py                  # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/crisis_day.py --seeds 2 --no-sensitivity   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.devtools.sim_engine import Simulation  # noqa: E402
from ivr.devtools.sim_model import apply_variant, load_profile  # noqa: E402

PROFILE = ROOT / "profiles" / "crisis-day.yaml"
KEYS = ("offered", "answered", "abandoned_pct", "asa_s", "avg_wait_s", "p90_wait_s", "self_service", "served",
        "notified_no_call", "transfers", "cb_offered", "cb_requested", "cb_made", "cb_kept", "cb_kept_pct",
        "cb_pending_end", "cb_promise_avg_s", "cb_wait_avg_s", "lost_pct", "agent_hours", "est_mae_s", "ast_mae_s",
        "shared_mae_s", "stay_mae_s", "erlc_mae_s", "est_bias_s", "ast_bias_s", "occ_core_pct",
        "occ_volunteer_pct", "occ_novice_pct")


def run_one(job: tuple[str, str, int, dict[str, Any]]) -> dict[str, Any]:
    profile, mode, seed, variant = job
    p = apply_variant(load_profile(profile), **variant)
    sim = Simulation(p, mode, seed).run()
    peak = max(range(24), key=lambda h: p.arrivals_per_hour[h])
    return {"day": {k: sim.summary()[k] for k in KEYS}, "peak": {k: sim.summary(peak, peak + 1)[k] for k in KEYS},
            "hourly": [sim.summary(h, h + 1)["avg_wait_s"] for h in range(24)], "runtime_s": sim.runtime_s}


def agg(runs: list[dict[str, Any]], part: str, key: str) -> tuple[float, float, float]:
    xs = [r[part][key] for r in runs]
    return sum(xs) / len(xs), min(xs), max(xs)


def kept_pct(runs: list[dict[str, Any]], part: str) -> float:
    """Callbacks kept within their promise, pooled over the seeds (a seed without callbacks adds nothing)."""
    made = sum(r[part]["cb_made"] for r in runs)
    return 100.0 * sum(r[part]["cb_kept"] for r in runs) / made if made else 100.0


def cell(runs: list[dict[str, Any]], part: str, key: str, fmt: str = "{:.1f}") -> str:
    if key == "cb_kept_pct":
        made = sum(r[part]["cb_made"] for r in runs)
        return f"{kept_pct(runs, part):.1f} of {made}" if made else "-"
    m, lo, hi = agg(runs, part, key)
    return f"{fmt.format(m)} ({fmt.format(lo)}–{fmt.format(hi)})" if len(runs) > 1 else fmt.format(m)


ROWS = [("calls offered (attempts)", "offered", "{:.0f}"), ("answered by an agent", "answered", "{:.0f}"),
        ("finished in self-service", "self_service", "{:.0f}"),
        ("served (answered + self-service + callbacks made)", "served", "{:.0f}"),
        ("notified, then did not call", "notified_no_call", "{:.0f}"), ("notice transfers to agents", "transfers", "{:.0f}"),
        ("abandoned %", "abandoned_pct", "{:.1f}"), ("callers lost % (gave up for good)", "lost_pct", "{:.1f}"),
        ("ASA s", "asa_s", "{:.1f}"), ("p90 wait s", "p90_wait_s", "{:.0f}"),
        ("callbacks offered / requested", None, ""), ("callbacks made", "cb_made", "{:.0f}"),
        ("callbacks kept within their promise % (pooled)", "cb_kept_pct", "{:.1f}"),
        ("callbacks pending at the end", "cb_pending_end", "{:.0f}"), ("promise heard, avg s", "cb_promise_avg_s", "{:.0f}"),
        ("callback made after, avg s", "cb_wait_avg_s", "{:.0f}"), ("agent-hours", "agent_hours", "{:.0f}")]


def table(cols: dict[str, list[dict[str, Any]]], part: str) -> str:
    names = list(cols)
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in ROWS:
        if key is None:
            vals = [f"{agg(r, part, 'cb_offered')[0]:.0f} / {agg(r, part, 'cb_requested')[0]:.0f}" for r in cols.values()]
        else:
            vals = [cell(r, part, key, fmt) for r in cols.values()]
        out.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def targets(static: list[dict[str, Any]], ctrl: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    def m(runs: list[dict[str, Any]], part: str, key: str) -> float:
        return agg(runs, part, key)[0]
    worst = {k: max(r["day"][k] for r in ctrl) for k in ("asa_s", "abandoned_pct")}
    kept = kept_pct(ctrl, "day")
    served_min = min(r["day"]["served"] for r in ctrl)
    served_notice_min = min(r["day"]["served"] + r["day"]["notified_no_call"] for r in ctrl)
    return [
        ("day ASA < 60 s (worst seed)", f"{worst['asa_s']:.1f} s", worst["asa_s"] < 60),
        ("day abandonment < 5 % (worst seed)", f"{worst['abandoned_pct']:.1f} %", worst["abandoned_pct"] < 5),
        ("callbacks kept within the promise >= 95 % (all seeds pooled)",
         f"{kept:.1f} % of {sum(r['day']['cb_made'] for r in ctrl)}", kept >= 95),
        ("peak-hour ASA < 120 s (worst seed)", f"{max(r['peak']['asa_s'] for r in ctrl):.1f} s",
         max(r["peak"]["asa_s"] for r in ctrl) < 120),
        ("served >= static answered (worst seed vs static mean)", f"{served_min:.0f} vs {m(static, 'day', 'answered'):.0f}",
         served_min >= m(static, "day", "answered")),
        ("served + notified who did not call >= static answered (worst seed)", f"{served_notice_min:.0f} vs "
         f"{m(static, 'day', 'answered'):.0f}", served_notice_min >= m(static, "day", "answered")),
        ("callbacks pending at the day's end (reported)", f"{max(r['day']['cb_pending_end'] for r in ctrl):.0f} (max)", True)]


def svg_chart(path: Path, series: dict[str, list[float]], title: str) -> None:
    """Average wait by hour, one line per series, as a small SVG (text and axes included)."""
    w, h, left, right, top, bottom = 760, 380, 60, 20, 40, 50
    ymax = max(60.0, max(v for s in series.values() for v in s)) * 1.1
    step = 60 if ymax <= 600 else 120

    def x(i: float) -> float:
        return left + (w - left - right) * i / 23

    def y(v: float) -> float:
        return h - bottom - (h - top - bottom) * v / ymax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    for v in range(0, int(ymax) + 1, step):
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for i in range(24):
        parts.append(f'<text x="{x(i):.1f}" y="{h - bottom + 16}" text-anchor="middle">{i}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">hour of the day (callers by arrival hour)</text>')
    parts.append(f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">'
                 'average wait in queue (s)</text>')
    for k, ((name, s), color) in enumerate(zip(series.items(), ("#d62728", "#1f77b4", "#2ca02c"))):
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<rect x="{w - right - 190}" y="{top + 8 + 18 * k}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{w - right - 172}" y="{top + 18 + 18 * k}">{name}</text>')
    parts.append("</svg>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(PROFILE))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-sensitivity", action="store_true")
    ap.add_argument("--chart", default=str(ROOT / "docs" / "img" / "crisis-day-waits.svg"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    seeds = list(range(1, a.seeds + 1))
    configs: dict[str, tuple[str, dict[str, Any]]] = {
        "static": ("static", {}), "controller": ("balanced", {}),
        "routing + callbacks only": ("balanced", {"self_service": False, "notices": False}),
        "no notices": ("balanced", {"notices": False})}
    if not a.no_sensitivity:
        for ss in (0.0, 0.2, 0.4):
            for acc in (0.2, 0.4, 0.6):
                configs[f"ss {ss:.0%} / accept {acc:.0%}"] = ("balanced", {"self_service_share": ss, "accept": acc,
                                                                           "self_service": ss > 0})
    jobs = [(a.profile, mode, seed, variant) for mode, variant in configs.values() for seed in seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        results = list(pool.map(run_one, jobs))
    elapsed = time.perf_counter() - t0
    by = {name: results[i * len(seeds):(i + 1) * len(seeds)] for i, name in enumerate(configs)}
    p = load_profile(a.profile)
    title = f"{p.name}: average wait by hour, mean of {len(seeds)} seeds (same roster, same callers)"
    series = {name: [sum(r["hourly"][hh] for r in by[name]) / len(seeds) for hh in range(24)]
              for name in ("static", "controller", "routing + callbacks only")}
    svg_chart(Path(a.chart), series, title)
    if a.json:
        print(json.dumps({"seeds": seeds, "elapsed_s": elapsed, "configs": by,
                          "targets": targets(by["static"], by["controller"])}, indent=1))
        return 0
    main3 = {k: by[k] for k in ("static", "controller", "no notices", "routing + callbacks only")}
    print(f"## {p.name}: seeds {seeds[0]}-{seeds[-1]}, mean (range)\n\n### Whole day\n\n{table(main3, 'day')}\n")
    print(f"### Peak hour (10:00)\n\n{table(main3, 'peak')}\n")
    print("### Targets (controller)\n\n| target | result | met |\n|---|---|---|")
    for label, val, ok in targets(by["static"], by["controller"]):
        print(f"| {label} | {val} | {'yes' if ok else 'NO'} |")
    print("\n### Wait estimates against the waits answered callers had (day, MAE s, mean of seeds)\n")
    print("| estimator | " + " | ".join(main3) + " |\n|---|" + "---|" * len(main3))
    for label, key in (("app_queue's holdtime (moving average of holds)", "ast_mae_s"),
                       ("pure-death, this queue's callers ahead", "est_mae_s"),
                       ("pure-death, the other queues' callers for the same agents too", "shared_mae_s"),
                       ("the same, callers ahead thinned by the share who stay", "stay_mae_s"),
                       ("Erlang C's ASA for the line", "erlc_mae_s")):
        print(f"| {label} | " + " | ".join(f"{agg(by[n], 'day', key)[0]:.1f}" for n in main3) + " |")
    if not a.no_sensitivity:
        print("\n### Sensitivity: self-service share x callback acceptance (notices as in the profile)\n")
        print("| self-service | accept | day ASA s | abandoned % | peak ASA s | served | callbacks made / kept % |"
              "\n|---|---|---|---|---|---|---|")
        for ss in (0.0, 0.2, 0.4):
            for acc in (0.2, 0.4, 0.6):
                r = by[f"ss {ss:.0%} / accept {acc:.0%}"]
                print(f"| {ss:.0%} | {acc:.0%} | {cell(r, 'day', 'asa_s')} | {cell(r, 'day', 'abandoned_pct')} | "
                      f"{cell(r, 'peak', 'asa_s')} | {agg(r, 'day', 'served')[0]:.0f} | "
                      f"{agg(r, 'day', 'cb_made')[0]:.0f} / {kept_pct(r, 'day'):.0f} |")
    print(f"\nchart: {a.chart}; {len(jobs)} runs in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
