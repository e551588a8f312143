"""Place keeping for dropped callers, on and off, in the surge profile (the simulator, balanced mode).

A share of the callers have their call cut while they wait (mobile networks, power cuts); most call
again within a couple of minutes. With place keeping (``continuity`` in ivr.yaml, on by default) a
caller who calls again within the window rejoins their queue at the place their first call had;
without it they start again from the menu, at the end of the line. Both runs share every random
draw (arrivals, patience, handle times, drops, recalls): the only difference is the feature.

    .venv/bin/python benchmarks/place_keeping.py [--drops 0.1,0.2] [--profile profiles/default.yaml]

Prints, per drop share, the whole day and the peak hour side by side with the ratio on/off.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.devtools.sim_engine import Simulation  # noqa: E402
from ivr.devtools.sim_model import ROOT as _ROOT, load_profile  # noqa: E402

DEFAULT_PROFILE = _ROOT / "profiles" / "default.yaml"   # the figures in docs/benchmarks.md

ROWS = [("callers (people)", "people", "{:.0f}"), ("calls", "offered", "{:.0f}"),
        ("dropped calls", "drops", "{:.0f}"), ("called again", "recalls", "{:.0f}"),
        ("back at their place", "returned_to_place", "{:.0f}"),
        ("callers lost %", "lost_pct", "{:.2f}"), ("total wait per caller s", "person_wait_s", "{:.1f}"),
        ("ASA s (calls)", "asa_s", "{:.1f}"), ("abandoned % (calls)", "abandoned_pct", "{:.2f}"),
        ("callers cut off", "dropped_people", "{:.0f}"), ("  of them lost %", "dropped_lost_pct", "{:.1f}"),
        ("  their total wait s", "dropped_wait_s", "{:.1f}")]


def table(title: str, off: dict, on: dict) -> str:
    lines = [f"{title:<28}{'off':>10}{'on':>10}{'on/off':>10}"]
    for label, key, fmt in ROWS:
        a, b = off[key], on[key]
        ratio = f"{b / a:>10.2f}" if a else f"{'-':>10}"
        lines.append(f"{label:<28}{fmt.format(a):>10}{fmt.format(b):>10}{ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE))
    ap.add_argument("--drops", default="0.1,0.2", help="drop shares to try, comma-separated")
    ap.add_argument("--mode", default="balanced", choices=("static", "balanced"))
    args = ap.parse_args(argv)
    base = load_profile(args.profile)
    peak = max(range(24), key=lambda h: base.arrivals_per_hour[h])
    for share in (float(x) for x in args.drops.split(",")):
        runs = {}
        for keep in (False, True):
            p = dataclasses.replace(base, drop_share=share, place_keeping=keep)
            runs[keep] = Simulation(p, args.mode).run()
        print(f"# {base.name}, {args.mode} mode, {share:.0%} of callers cut off while waiting "
              f"(recall {base.recall_share:.0%} after ~{base.recall_after_s:.0f} s, window {base.keep_window_s:.0f} s)")
        print(table("whole day", runs[False].summary(), runs[True].summary()))
        print(table(f"peak hour {peak:02d}:00", runs[False].summary(peak, peak + 1), runs[True].summary(peak, peak + 1)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
