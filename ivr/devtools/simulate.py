"""``ivr simulate``: a profile run in static and/or balanced mode, printed as tables (or JSON, a chart).

The model is ivr/devtools/sim_model.py, the engine ivr/devtools/sim_engine.py."""


from __future__ import annotations

import argparse, json, struct, sys, zlib  # noqa: E401
from pathlib import Path
from typing import Any, Sequence

from .sim_engine import run_modes
from .sim_model import DEFAULT_PROFILE, MODES, apply_variant, load_profile


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
