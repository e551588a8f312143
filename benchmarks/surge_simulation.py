"""The crisis day in both modes: static app_queue setup vs the balancing policy, same agent-hours.

Runs ``profiles/default.yaml`` (or ``--profile``) through ``ivr.devtools.simulate`` in ``static``
and ``balanced`` mode, prints the side-by-side table for the day and for the peak hour, and
writes a chart of the average wait per hour of the day for both modes
(``docs/img/surge-waits.png`` by default).

The chart uses matplotlib when it is installed (it is only a benchmark/test-extra dependency,
never imported by the package); otherwise it falls back to the simulator's pure-Python PNG
writer (lines and grid only, no text).

    python benchmarks/surge_simulation.py [--profile FILE] [--out PNG] [--seed N] [--tick S] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.devtools.sim_engine import run_modes  # noqa: E402
from ivr.devtools.sim_model import load_profile  # noqa: E402
from ivr.devtools.simulate import format_table, write_chart  # noqa: E402


def chart(path: Path, hourly: dict[str, list[float]], h0: int, title: str) -> str:
    """Write the PNG; returns which writer was used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_chart(path, hourly)
        return "pure-python"
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    hours = list(range(h0, h0 + max(len(v) for v in hourly.values())))
    for (mode, waits), color in zip(hourly.items(), ("tab:red", "tab:blue")):
        ax.plot(hours, waits, marker="o", markersize=3, color=color, label=mode)
    ax.set_xlabel("hour of the day (callers by arrival hour)")
    ax.set_ylabel("average wait in queue (s)")
    ax.set_xticks(hours)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "matplotlib"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "default.yaml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "surge-waits.png"))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--tick", type=float, help="seconds between decisions (default: the profile's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    p = load_profile(args.profile)
    t0 = time.perf_counter()
    res = run_modes(p, seed=args.seed, tick=args.tick)
    elapsed = time.perf_counter() - t0
    ms = res["modes"]
    writer = chart(Path(args.out), {m: r["hourly_avg_wait_s"] for m, r in ms.items()}, 0,
                   f"{p.name}: average wait per hour, static vs balanced (same agent-hours)")
    res.update(chart=args.out, chart_writer=writer, elapsed_s=elapsed)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(format_table({m: r["overall"] for m, r in ms.items()}, f"{p.name} (day)"))
    print("\n" + format_table({m: r["peak"] for m, r in ms.items()}, f"peak hour {res['peak_hour']:02d}:00"))
    print("\nruntime: " + ", ".join(f"{m} {r['runtime_s']:.1f} s ({r['decisions']} decisions, "
                                      f"{len(r['tier_events'])} tier changes)" for m, r in ms.items())
          + f"; total {elapsed:.1f} s")
    print(f"chart: {args.out} ({writer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
