"""The crisis hour on the real stack: static app_queue against the controller, with the same callers.

The simulator's callers of one hour of a profile (``make_callers``: arrival, queue, patience, handle
time, callback draw), compressed by ``--factor``, replayed through the real Asterisk twice, each time on
a fresh private stack, by the same SIPp agent phones (each call talks its caller's handle time,
novices ``novice_factor`` x longer; looked up by the caller's number, see ivr/devtools/crisis.py):

* **static**: a plain dialplan (numbers 531-533 appended to ``from-trunk``): ``Answer()``, then
  ``Queue(<the caller's queue>)`` with the caller's patience as its timeout. No AGI, no menu, no
  self-service, no callbacks, no notices. Every agent of the hour (core and volunteers, novices too)
  is a penalty-0 member of all their queues: the controller runs (records, live state) with a flat
  roster (all ``core``/``experienced``, no simple queues), so the policy's desired state is exactly
  that, set once at start and never changed (the run reports the balancing actions to show it).
* **controller**: number 530, the rendered inbound route plus the caller's patience as
  ``IVR_QUEUE_TIMEOUT``: the real menu (a scaled copy of ``dialplans/main.yaml``): language key,
  ``#`` over the crisis message, the branch key; refund status / request are self-service with a
  booking number, and ``--press0`` of those callers then press 0 for an agent; the balancing loop
  (volunteer tiers, novices), callback offers (a caller whose simulator draw says they take one
  presses 1 and confirms their number; the callback rings the SIPp customer phones behind the
  loopback carrier, who answer), and the profile's notice campaign (``notices: {contacts: N}``) just
  before the wave (``--notices N`` overrides; none by default).

Time constants compressed by the factor (controller run): each queue node's ``callback_over``,
``balance.open_wait_s`` / ``close_wait_s`` / ``min_open_s``, the queues' ``servicelevel``, the callback
promise (for "kept"); arrivals, patience and handle times. Not compressed: the menu's prompts and key
timeouts (the walk through the menu), SIP set-up, the loop's 1 s tick (``--tick``), the loop's 30-min
service-level window and its 180 s default handle time until a queue has 5 answers.

Figures: from the call records the controller writes (Redis, ``/api/v1/calls``), for both runs (a
static call gets its record from the queue events); the static run's counts are checked against
Asterisk's queue_log. Beside them the simulator's prediction for the same hour and seed at normal
scale (times / factor), and the improvement ratios (controller / static) of both, with whether they
agree within 25 %.

Usage::

    .venv/bin/python benchmarks/crisis_hour.py                      # the peak hour, x10: 2 x ~8 min
    .venv/bin/python benchmarks/crisis_hour.py --smoke --json       # 15 s of arrivals per run
    .venv/bin/python benchmarks/crisis_hour.py --runs controller    # one run only

Everything is on 127.0.0.1; every SIPp run is bounded in calls and time; the stacks and phones are
stopped at the end, on errors and on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.devtools import crisis  # noqa: E402
from ivr.devtools.crisis_report import format_table, predict  # noqa: E402
from ivr.devtools.crisis_stack import Options, Replay  # noqa: E402
from ivr.devtools.stack import missing_tools  # noqa: E402


def reprint(path: str, as_json: bool) -> int:
    """The table of a saved run (--out) again, with the simulator's prediction computed now."""
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    opts = Options(workdir=Path(tempfile.mkdtemp(prefix="ivr-crisis-reprint-")),
                   profile=Path(result["profile_path"]), seed=result["seed"], hour=result["hour"],
                   factor=result["factor"], press0=result["press0"], window_s=result.get("seconds"))
    replay = Replay(opts)
    predict(result, replay.profile, replay.seed, replay.hour, replay.trace)
    shutil.rmtree(opts.workdir, ignore_errors=True)
    print(json.dumps(result, indent=1) if as_json else format_table(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=str(crisis.DEFAULT_PROFILE),
                   help="profile YAML (default profiles/crisis-day.yaml if present, else profiles/default.yaml)")
    p.add_argument("--seed", type=int, help="seed of the callers (default: the profile's)")
    p.add_argument("--hour", type=int, help="hour of the day to replay (default: the profile's peak hour)")
    p.add_argument("--factor", type=float, default=10.0, help="time compression (default 10)")
    p.add_argument("--press0", type=float, default=0.2,
                   help="share of self-service callers who then press 0 for an agent, for a profile without a "
                        "menu section (with one, the simulator's own draws decide; default 0.2)")
    p.add_argument("--notices", type=int, help="contacts of a notice campaign just before the wave (default: none)")
    p.add_argument("--runs", default="static,controller", help="runs to do (default static,controller)")
    p.add_argument("--seconds", type=float, help="only the first SECONDS (compressed) of the hour")
    p.add_argument("--drain", type=float, default=150.0,
                   help="seconds after the last arrival the calls may take to end (default 150)")
    p.add_argument("--tick", type=float, default=1.0, help="the balancing loop's interval (default 1 s)")
    p.add_argument("--smoke", action="store_true",
                   help="test size: 15 s of arrivals, patience and talk capped at 20 s, 50 s of drain per run")
    p.add_argument("--workdir", help="workdir (default: a temporary one, removed after a good run)")
    p.add_argument("--port-base", type=int, help="port base of the static run's stack (the controller's: +2000)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the result as JSON to this file")
    p.add_argument("--from-json", metavar="FILE", help="print the table of a saved run (--out FILE) again, with "
                                                       "the simulator's prediction computed now; runs nothing")
    args = p.parse_args(argv)
    if args.from_json:
        return reprint(args.from_json, args.json)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or any(r not in ("static", "controller") for r in runs):
        p.error("--runs: static and/or controller")
    if args.factor < 1 or not 0 <= args.press0 <= 1:
        p.error("--factor must be >= 1, --press0 between 0 and 1")
    if missing_tools():
        p.error(f"{', '.join(missing_tools())} not installed: run scripts/install.sh")
    if args.smoke:
        args.seconds = args.seconds or 15.0
        args.drain = min(args.drain, 50.0)
    made_tmp = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ivr-crisis-")).resolve()
    opts = Options(workdir=workdir, profile=Path(args.profile), seed=args.seed, hour=args.hour, factor=args.factor,
                   press0=args.press0, window_s=args.seconds, drain_s=args.drain, notices=args.notices,
                   tick=args.tick, port_base=args.port_base, cap_s=20.0 if args.smoke else None)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.time()
    replay = Replay(opts, out=sys.stderr, live=not args.json)
    result: dict[str, Any] = {
        "profile": replay.profile.name, "profile_path": str(args.profile), "seed": replay.seed, "hour": replay.hour,
        "factor": args.factor, "press0": args.press0, "seconds": args.seconds, "smoke": args.smoke,
        "callers": len(replay.trace),
        "span_s": round(replay.span, 1),
        "agents": len(replay.roster), "roster": [{"id": a.id, "skill": a.skill, "tier": a.tier, "team": a.team}
                                                 for a in replay.roster],
        "notices": replay.notices, "scaled": replay.scaled.describe(replay.profile), "runs": {},
        "workdir": str(workdir)}
    rc = 0
    try:
        replay.start_phones()
        for mode in runs:
            result["runs"][mode] = replay.run(mode)
    except KeyboardInterrupt:
        replay.log("interrupted: stopping everything")
        rc = 130
    except Exception as exc:  # noqa: BLE001 - reported, then everything is stopped
        replay.log(f"error: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        replay.stop()
    predict(result, replay.profile, replay.seed, replay.hour, replay.trace)
    result["complete"] = rc == 0 and len(result["runs"]) == len(runs)
    result["duration_s"] = round(time.time() - started, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    if made_tmp and rc == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    elif made_tmp:
        replay.log(f"workdir kept: {workdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
