"""End-to-end load on the real stack: callers through the IVR into the queues and to agents,
with the controller's CPU, memory, open files and tasks sampled all along.

Two modes, each on its own private stack (Asterisk 16, Redis, the controller; SIPp callers
and SIPp agent phones), everything on 127.0.0.1:

* ``--mode rate`` (default): a sustained surge. Callers arrive at ``--rate`` calls/s for
  ``--seconds`` and go through the default menu (``dialplans/main.yaml``) as the demo's
  callers do: crisis message skipped with #, a language (en 50 %, fa 30 %, zh 20 %), then
  refund status (35 %: self-service, booking 314159 has a refund), refund request (30 %:
  self-service, a refund request created and read back), rebooking (25 %: queue) or other
  (10 %: queue); queued callers talk to a SIPp agent for ``--talk`` seconds, then the
  survey times out and Asterisk hangs up. ``--agents`` (default: enough for the offered
  load with a margin) answer. The same mode at 2 calls/s for 600 s is the soak test of
  docs/reliability.md (memory, open files and tasks flat).
* ``--mode hold``: a crowd on hold. ``--callers`` (default 500) arrive at ``--arrival``
  calls/s through ``benchmarks/menus/hold.yaml`` ("please hold", then the support queue
  with music on hold, no callback offer) and wait up to ``--seconds`` (default 600) while
  ``--agents`` (default 10) answer one by one (``--talk`` 30 s); whoever is still waiting
  then leaves the queue (Queue()'s timeout) and Asterisk hangs up.

A run passes when: SIPp reports under ``--max-failed`` (0.1 %) failed calls, no FastAGI
session failed, no caller was sent to the fallback queue, and every call has its record in
Redis; the controller's memory is judged flat when its resident size at the end of the
run is within ``--rss-slack`` (10 MB) of its size once the load was established (a third
of the way in), and its task count and open files are back to their idle values once the
calls have ended.

Figures: controller CPU (% of one core, and ms per call), Asterisk's and Redis's CPU,
the controller's RSS (start of load, a third in, end, peak), open files and asyncio tasks
(idle before, peak, idle after), peak callers waiting, and the call outcomes.

Usage::

    .venv/bin/python benchmarks/surge_load.py                              # 3 calls/s for 300 s
    .venv/bin/python benchmarks/surge_load.py --rate 2 --seconds 600       # the 10-minute soak
    .venv/bin/python benchmarks/surge_load.py --mode hold                  # 500 on hold for 10 min
    .venv/bin/python benchmarks/surge_load.py --rate 3 --seconds 10 --json # smoke size

Every SIPp run is bounded in calls and time; the stack is stopped at the end, on errors
and on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ivr_call_rate import proc_cpu_s, proc_rss_mb  # noqa: E402
from ivr.devtools.demo import BRANCHES, STATUS_BOOKING, _seed_refund, surge_mix  # noqa: E402
from ivr.devtools.sipp import CallerScript, Sipp, free_port  # noqa: E402
from ivr.devtools.stack import PORT_OFFSETS, Stack, StackError, missing_tools, pick_port_base  # noqa: E402

HOLD_MENU = Path(__file__).resolve().parent / "menus" / "hold.yaml"
DID_HOLD = "520"
QUEUE_SHARE = sum(share for _, key, share in BRANCHES if key in ("3", "4"))
# seconds a queued caller spends in the default menu before the queue (prompts, keys, the "please hold")
MENU_S = 12.0


class LoadError(RuntimeError):
    pass


def open_files(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sockets_to(pid: int | None, port: int) -> int:
    """How many of the process's open sockets are TCP connections to 127.0.0.1:port (its Redis pool)."""
    if not pid or not port:
        return 0
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        with open("/proc/net/tcp", encoding="ascii") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return 0
    want = f"{port:04X}"
    return sum(1 for r in rows if (f := r.split()) and f[9] in inodes and f[2].endswith(":" + want))


class Load:
    def __init__(self, args: argparse.Namespace, workdir: Path, out: Any = sys.stderr) -> None:
        self.args = args
        self.workdir = workdir
        self.out = out
        self.stack = Stack(workdir)
        self.up = False
        self.procs: list[Any] = []
        self.callers: list[tuple[str, int, Any]] = []
        self.sipp: Sipp | None = None
        self.api = ""
        self.token = ""
        self.redis_port = 0
        self.redis_pool_after = 0

    def log(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    # ------------------------------------------------------------------ stack
    def concurrent_calls(self) -> int:
        a = self.args
        if a.mode == "hold":
            return a.callers + a.agents
        return int(a.rate * (MENU_S + a.talk + 40) * 1.5) + 50

    def start(self) -> dict[str, Any]:
        a = self.args
        rtp_pairs = max(500, self.concurrent_calls() + 100)
        base = a.port_base or pick_port_base(20000, 30000, 4000, rtp_pairs)
        dialplans = self.workdir / "dialplans"
        dialplans.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "dialplans" / "main.yaml", dialplans / "main.yaml")
        # callers leave the queue when their wait is up (Queue()'s timeout), never by hanging up: a SIPp
        # caller cannot tell it was answered, and hanging up at its patience would cut off an agent who just
        # took the call (the agent "answers" a caller who drops a second later)
        hold_menu = HOLD_MENU.read_text(encoding="utf-8").replace("    announce_wait: false",
                                                                  f"    announce_wait: false\n    timeout: {int(a.seconds)}")
        (dialplans / "hold.yaml").write_text(hold_menu, encoding="utf-8")
        self.agent_ports = {str(3001 + i): free_port() for i in range(a.agents)}
        agents = [{"id": aid, "name": f"Agent {aid}", "skill": "experienced", "team": f"team-{int(aid) % 2 + 1}",
                   "tier": "core", "queues": ["support", "refunds", "rebooking"],
                   "contact": f"sip:{aid}@127.0.0.1:{port}", "logged_in": True}
                  for aid, port in self.agent_ports.items()]
        rtp_start = base + PORT_OFFSETS["rtp_start"]
        self.stack.init(port_base=base, extra={
            "agents": agents, "dialplans_dir": str(dialplans), "dids": {DID_HOLD: "hold"},
            "asterisk": {"rtp_start": rtp_start, "rtp_end": rtp_start + 2 * rtp_pairs - 1}})
        self.up = True
        info = self.stack.up(timeout=90)
        self.api, self.token = info["api"], info["token"]
        _seed_refund(self.stack.config(), STATUS_BOOKING)
        cfg = self.stack.config()
        self.sipp = Sipp(target_port=cfg.asterisk.sip_port, workdir=self.workdir / "sipp")
        run_s = int(a.seconds + 900)
        for port in self.agent_ports.values():
            self.procs.append(self.sipp.start_agent(port, talk_ms=int(a.talk * 1000), timeout_s=run_s))
        self.log(f"stack up in {self.workdir} (port base {base}, RTP for {rtp_pairs} calls), "
                 f"{a.agents} SIPp agents talking {a.talk:g} s")
        return info

    def stop(self) -> None:
        for p in self.procs + [c[2] for c in self.callers]:
            try:
                Sipp.stop(p)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.up:
            self.stack.down()
            self.up = False

    def pid(self, name: str) -> int | None:
        try:
            return int((self.workdir / "pids" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def fds_besides_redis(self, pid: int | None) -> int | None:
        """Open files of the controller, not counting its Redis connection pool (redis-py keeps the
        connections a peak needed open for reuse: that is a bounded pool, not a leak)."""
        n = open_files(pid)
        return None if n is None else n - sockets_to(pid, self.redis_port)

    def health(self) -> dict[str, Any]:
        return self.get("/health")   # the detail needs a token

    # ------------------------------------------------------------------ callers
    def start_callers(self) -> int:
        a = self.args
        assert self.sipp is not None
        cfg = self.stack.config()
        timeout_s = int(a.seconds + 600)
        if a.mode == "hold":
            script = CallerScript(steps=[], end="wait_bye", patience_ms=int((a.seconds + 120) * 1000))
            self.callers = [("hold", a.callers, self.sipp.start_calls(
                script, extension=DID_HOLD, caller_prefix="5530", calls=a.callers, rate=a.arrival,
                concurrent=a.callers + 10, timeout_s=timeout_s))]
            return a.callers
        total = max(1, int(round(a.rate * a.seconds)))
        self.callers = []
        placed = 0
        for i, g in enumerate(surge_mix(total, a.rate, a.patience)):
            self.callers.append((g.name, g.calls, self.sipp.start_calls(
                g.script, extension=cfg.asterisk.inbound_extension, caller_prefix=f"55{i:02d}", calls=g.calls,
                rate=g.rate, concurrent=int(g.rate * (a.patience + 120)) + 20, timeout_s=timeout_s)))
            placed += g.calls
        return placed

    # ------------------------------------------------------------------ the run
    def sample(self, pids: dict[str, int | None], t0: float) -> dict[str, Any]:
        h = self.health()
        try:
            queues = self.get("/api/v1/queues")["queues"]
        except (OSError, ValueError, KeyError):
            queues = {}
        return {"t": round(time.time() - t0, 1),
                "cpu_s": {n: proc_cpu_s(p) for n, p in pids.items()},
                "rss_mb": round(proc_rss_mb(pids["controller"]) or 0.0, 1),
                "fds": open_files(pids["controller"]), "tasks": h.get("tasks"),
                "agi_active": h["agi"]["active_calls"], "records_active": h["records"]["active"],
                "waiting": sum(int(q.get("waiting", 0)) for q in queues.values()),
                "talking": sum(int(q.get("busy", 0)) for q in queues.values())}

    def wait_quiet(self, timeout: float = 120.0) -> dict[str, Any]:
        """Until no AGI session and no open call record are left (then the idle figures)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["agi"]["active_calls"] == 0 and h["records"]["active"] == 0:
                break
            time.sleep(1)
        time.sleep(3)   # let the loop's tick and the record writer settle
        return self.health()

    def run(self) -> dict[str, Any]:
        a = self.args
        self.start()
        pids = {n: self.pid(n) for n in ("controller", "asterisk", "redis")}
        time.sleep(3)
        idle = self.health()
        self.redis_port = int(self.stack.config().redis.url.rsplit(":", 1)[1].split("/")[0])
        idle_fds = self.fds_besides_redis(pids["controller"])
        t0 = time.time()
        cpu0 = {n: proc_cpu_s(p) for n, p in pids.items()}
        placed = self.start_callers()
        self.log(f"{a.mode}: {placed} callers" + (f" at {a.arrival:g}/s, waiting up to {a.seconds:g} s"
                                                 if a.mode == "hold" else f" at {a.rate:g}/s for {a.seconds:g} s"))
        samples = [self.sample(pids, t0)]
        while any(p.poll() is None for _, _, p in self.callers):
            time.sleep(a.sample)
            s = self.sample(pids, t0)
            samples.append(s)
            self.log(f"  t={s['t']:6.0f}s  ctl rss {s['rss_mb']:.1f} MB, fds {s['fds']}, tasks {s['tasks']}, "
                     f"in IVR {s['agi_active']}, waiting {s['waiting']}, talking {s['talking']}")
            if s["t"] > a.seconds + 900:
                raise LoadError("callers still running 15 minutes after the end of the run")
        results = {name: self.sipp.finish(p, timeout=60) for name, _, p in self.callers}  # type: ignore[union-attr]
        t_end = time.time()
        cpu1 = {n: proc_cpu_s(p) for n, p in pids.items()}
        after = self.wait_quiet()
        after_fds = self.fds_besides_redis(pids["controller"])
        self.redis_pool_after = sockets_to(pids["controller"], self.redis_port)
        calls = [c for c in self.get(f"/api/v1/calls?count={min(10000, placed * 2 + 50)}")["calls"]
                 if float(c.get("started_at") or c.get("joined_at") or 0) >= t0 - 1]
        return self.report(placed, results, samples, calls, idle, idle_fds, after, after_fds,
                           {n: (cpu1[n] or 0) - (cpu0[n] or 0) for n in pids}, t_end - t0)

    def report(self, placed: int, results: dict[str, Any], samples: list[dict[str, Any]], calls: list[dict[str, Any]],
               idle: dict[str, Any], idle_fds: int | None, after: dict[str, Any], after_fds: int | None,
               cpu: dict[str, float], wall: float) -> dict[str, Any]:
        a = self.args
        ok = sum(r.successful for r in results.values())
        failed = sum(r.failed for r in results.values())
        outcomes: dict[str, int] = {}
        for c in calls:
            outcomes[str(c.get("outcome"))] = outcomes.get(str(c.get("outcome")), 0) + 1
        answered = [c for c in calls if c.get("outcome") == "answered"]
        waits = [float(c.get("wait") or 0) for c in answered]
        # wait estimates the callers met at the queue against the wait that followed (answered callers only:
        # an abandoned caller's wait is cut short, not measured)
        # "warm": only callers who joined after five calls had ended, when both estimators had measured
        # handle and hold times (before that the controller assumes its default handle time, app_queue 0 s)
        ends = sorted(float(c["answered_at"]) + float(c.get("talk") or 0) for c in answered if c.get("answered_at"))
        warm_from = ends[4] if len(ends) >= 5 else float("inf")
        warm = [c for c in answered if float(c.get("joined_at") or 0) > warm_from]
        errors: dict[str, dict[str, Any]] = {}
        for subset, group in (("", answered), ("warm_", warm)):
            for key, name in (("estimate", "policy"), ("ast_estimate", "asterisk")):
                diffs = [float(c[key]) - float(c.get("wait") or 0) for c in group if c.get(key) not in (None, "")]
                errors[subset + name] = ({"n": len(diffs), "mae_s": round(sum(abs(d) for d in diffs) / len(diffs), 1),
                                          "bias_s": round(sum(diffs) / len(diffs), 1)} if diffs else {"n": 0})
        # memory: once the load is established (a third of the way through the arrivals) against the end
        load_s = a.seconds if a.mode == "rate" else a.callers / a.arrival
        third = next((s for s in samples if s["t"] >= load_s / 3), samples[-1])
        last_loaded = [s for s in samples if s["t"] <= max(load_s, a.seconds if a.mode == "hold" else 0)] or samples
        rss = {"start": samples[0]["rss_mb"], "third": third["rss_mb"], "end": last_loaded[-1]["rss_mb"],
               "peak": max(s["rss_mb"] for s in samples)}
        agi_failed = int(after["agi"]["failed"]) - int(idle["agi"]["failed"])
        agi_calls = int(after["agi"]["calls"]) - int(idle["agi"]["calls"])
        fallback = sum(1 for c in calls if c.get("fallback") == "1")
        reasons = []
        if failed > a.max_failed * placed:
            reasons.append(f"{failed} failed calls of {placed} (allowed {a.max_failed:.1%})")
        if ok + failed != placed:
            reasons.append(f"SIPp ran {ok + failed} calls of {placed}")
        if agi_failed:
            reasons.append(f"{agi_failed} FastAGI sessions failed")
        if fallback:
            reasons.append(f"{fallback} callers sent to the fallback queue")
        if len(calls) != placed:
            reasons.append(f"{len(calls)} call records for {placed} calls")
        if rss["end"] - rss["third"] > a.rss_slack:
            reasons.append(f"controller memory grew {rss['end'] - rss['third']:.1f} MB after the load was "
                           f"established (allowed {a.rss_slack:g})")
        if after.get("tasks") != idle.get("tasks"):
            reasons.append(f"asyncio tasks {idle.get('tasks')} idle before, {after.get('tasks')} after")
        if idle_fds is not None and after_fds is not None and after_fds > idle_fds + 2:
            reasons.append(f"controller open files (besides the Redis pool) {idle_fds} idle before, {after_fds} "
                           "after")
        return {
            "mode": a.mode, "calls": placed, "successful": ok, "failed": failed,
            "rate": a.rate if a.mode == "rate" else a.arrival, "seconds": a.seconds, "agents": a.agents,
            "talk_s": a.talk, "wall_s": round(wall, 1),
            "calls_per_hour": round(placed / a.seconds * 3600) if a.mode == "rate" else None,
            "outcomes": outcomes, "answered": len(answered),
            "asa_s": round(sum(waits) / len(waits), 1) if waits else None,
            "estimate_error": errors,
            "agi_calls": agi_calls, "agi_failed": agi_failed, "fallback": fallback, "records": len(calls),
            "cpu_pct": {n: round(100 * v / wall, 1) for n, v in cpu.items()},
            "ms_per_call": {n: round(1000 * v / placed, 2) for n, v in cpu.items()},
            # the steady-state share of one core at the arrival rate: CPU per call x calls per second
            "cpu_pct_at_rate": {n: round(100 * v / placed * (a.rate if a.mode == "rate" else a.arrival), 1)
                                for n, v in cpu.items()},
            "controller_rss_mb": rss,
            "tasks": {"idle_before": idle.get("tasks"), "peak": max(s["tasks"] or 0 for s in samples),
                      "idle_after": after.get("tasks")},
            "open_files": {"idle_before": idle_fds, "peak": max(s["fds"] or 0 for s in samples),
                           "idle_after": after_fds, "redis_pool_after": self.redis_pool_after},
            "peak_waiting": max(s["waiting"] for s in samples),
            "peak_in_ivr": max(s["agi_active"] for s in samples),
            # the most callers that were all waiting at once through a whole 10-minute stretch
            "held_600s": held_through(samples, 600.0),
            "samples": samples, "passed": not reasons, "reasons": reasons,
        }


def held_through(samples: list[dict[str, Any]], span: float) -> int:
    """The highest count of callers waiting that held at every sample of some ``span`` seconds: the lowest
    ``waiting`` within a window, maximised over windows starting at each sample (0 if the run was shorter)."""
    best = 0
    for i, first in enumerate(samples):
        window = [s["waiting"] for s in samples[i:] if s["t"] - first["t"] <= span]
        if samples[-1]["t"] - first["t"] >= span and window:
            best = max(best, min(window))
    return best


def format_report(r: dict[str, Any]) -> str:
    rss, t, f = r["controller_rss_mb"], r["tasks"], r["open_files"]
    head = (f"{r['calls']} calls at {r['rate']:g}/s" + (f" for {r['seconds']:g} s ({r['calls_per_hour']} calls/h)"
                                                       if r["mode"] == "rate" else f", waiting up to {r['seconds']:g} s"))
    lines = [
        f"mode {r['mode']}: {head}, {r['agents']} agents ({r['talk_s']:g} s talk), wall {r['wall_s']:g} s",
        f"  SIPp: {r['successful']} successful, {r['failed']} failed; FastAGI {r['agi_calls']} sessions, "
        f"{r['agi_failed']} failed; fallback {r['fallback']}; records {r['records']}",
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        + (f"; ASA {r['asa_s']} s" if r["asa_s"] is not None else ""),
        f"  peak waiting in queues {r['peak_waiting']}, peak in the IVR {r['peak_in_ivr']}; "
        f"waiting all through 600 s: {r['held_600s']}",
        "  wait estimate error on answered calls (estimate - wait; warm_: joined after 5 calls ended): " + "; ".join(
            f"{name}: MAE {e['mae_s']} s, bias {e['bias_s']} s (n={e['n']})" if e["n"] else f"{name}: no data"
            for name, e in r["estimate_error"].items()),
        "  CPU per call (ms): " + ", ".join(f"{n} {v}" for n, v in r["ms_per_call"].items())
        + f"; at {r['rate']:g} calls/s that is % of one core: "
        + ", ".join(f"{n} {v}" for n, v in r["cpu_pct_at_rate"].items())
        + "  (over the whole run: " + ", ".join(f"{n} {v}" for n, v in r["cpu_pct"].items()) + ")",
        f"  controller RSS MB: start {rss['start']}, a third in {rss['third']}, end {rss['end']}, peak {rss['peak']}",
        f"  controller tasks: idle {t['idle_before']}, peak {t['peak']}, idle after {t['idle_after']}; "
        f"open files: idle {f['idle_before']}, peak {f['peak']}, idle after {f['idle_after']}",
        "  " + ("PASS" if r["passed"] else "FAIL: " + "; ".join(r["reasons"])),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("rate", "hold"), default="rate")
    p.add_argument("--rate", type=float, default=3.0, help="rate mode: calls per second (default 3)")
    p.add_argument("--seconds", type=float, help="rate: seconds of arrivals (default 300); hold: how long "
                   "callers wait at most (default 600)")
    p.add_argument("--callers", type=int, default=500, help="hold mode: callers (default 500)")
    p.add_argument("--arrival", type=float, default=10.0, help="hold mode: arrivals per second (default 10)")
    p.add_argument("--agents", type=int, help="agent phones (default: rate: enough for the load; hold: 10)")
    p.add_argument("--talk", type=float, help="seconds an agent talks (default: rate 6, hold 30)")
    p.add_argument("--patience", type=float, default=120.0, help="rate mode: seconds a caller waits in a queue")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--max-failed", type=float, default=0.001, help="allowed failed calls, fraction (0.001)")
    p.add_argument("--rss-slack", type=float, default=10.0, help="allowed controller RSS growth, MB (10)")
    p.add_argument("--port-base", type=int)
    p.add_argument("--workdir", help="stack workdir (default: a new temporary dir, removed at the end)")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 300.0 if args.mode == "rate" else 600.0
    if args.talk is None:
        args.talk = 6.0 if args.mode == "rate" else 30.0
    if args.agents is None:
        # rate: the queued share of the offered load in Erlangs, with a 50 % margin
        args.agents = (max(2, math.ceil(args.rate * QUEUE_SHARE * (args.talk + 2) * 1.5) + 1)
                       if args.mode == "rate" else 10)
    if args.rate <= 0 or args.seconds <= 0 or args.callers <= 0 or args.arrival <= 0 or args.agents <= 0:
        p.error("--rate, --seconds, --callers, --arrival and --agents must be positive")
    if missing_tools():
        p.error(f"{', '.join(missing_tools())} not installed: run scripts/install.sh")
    made_tmp = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ivr-load-")).resolve()
    load = Load(args, workdir)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    rc = 0
    result: dict[str, Any] = {}
    try:
        result = load.run()
        rc = 0 if result["passed"] else 2
    except KeyboardInterrupt:
        load.log("interrupted: stopping the stack")
        rc = 130
    except (LoadError, StackError, OSError) as exc:
        load.log(f"error: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        load.stop()
        if made_tmp and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if result:
        result.update({"cpus": os.cpu_count(), "complete": rc in (0, 2)})
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(format_report(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
