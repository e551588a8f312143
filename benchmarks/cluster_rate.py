"""Calls per second through Kamailio and two nodes against one node without Kamailio, in one run, one machine.

Two set-ups run side by side for the whole run, both answering the same one-key menu
(``benchmarks/menus/bench.yaml``, number 510: a beep, key 1, a goodbye beep, the call record in Redis),
the same way ``benchmarks/ivr_call_rate.py`` measures its IVR mode:

* **single** (a): one ``Stack``: Redis, Asterisk, the controller; SIPp dials Asterisk directly.
* **cluster** (b): a ``Cluster`` of two nodes (each its own Asterisk and controller) sharing one Redis, with
  Kamailio in front (dispatcher round-robin); SIPp dials Kamailio, and its ACK and BYE follow the
  Record-Route Kamailio put in the dialog (``CallerScript(via_proxy=True)``). Asterisk's BYE at the end
  comes back through Kamailio too.

The caller is ivr_call_rate.py's ``key`` caller: 60 ms of audio at the answer, RFC 4733 "1" 400 ms later,
then Asterisk's BYE after the goodbye beep (about 1 s a call).

Each round climbs a ladder of fixed rates; at each rate both set-ups run one step (D seconds at R calls/s),
in the order single, cluster in odd rounds and cluster, single in even ones, so machine noise hits both. A
set-up leaves the round at its first failing rate; its result for the round is its highest passing rate.
A step passes when, as in ivr_call_rate.py (tolerance 0.2 % of the calls, rounded down):

* SIPp exits 0, every call successful, **0 failed calls**;
* retransmissions, unexpected messages and missed keys (the controllers' logs) each <= tolerance;
* every call had one FastAGI session (none failed) and its call record written, summed over the nodes;
* SIPp placed all calls within 1.25 * D + 2 s, never hit its ``-l`` limit, and the mean call stayed
  within 1 s of the set-up's warm-up mean.

CPU: utime + stime from ``/proc/<pid>/stat`` before and after each step: Asterisk and the controller of each
node, the Redis, and Kamailio (the sum over all its processes: the main one and the children it forks,
found by process group); SIPp's from ``wait4``. "ms/call" divides a part's CPU by the calls it carried (a
node's: the FastAGI sessions its controller served in the step; Kamailio's and Redis's: all the step's
calls). ``other`` is the machine's busy time minus all of these (other tenants, and the idle set-up).

On one machine both nodes share the same two cores: two nodes cannot be faster than one here, and the
cluster pays for two Asterisks, two controllers and Kamailio out of the same CPU. What one more machine
would add is derived from the CPU per call (printed at the end): a node on cores of its own, and how many
such nodes one Kamailio could front.

Usage::

    .venv/bin/python benchmarks/cluster_rate.py                 # the full run, ~10 minutes
    .venv/bin/python benchmarks/cluster_rate.py --quick --json  # a ~1 minute smoke run

Everything listens on 127.0.0.1 only; every SIPp run is bounded in calls and time; the run stops by itself
after its ladder or its time budget (``--budget``); both set-ups are stopped at the end, on errors and on
Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ivr_call_rate import (  # noqa: E402
    CALLERS, DID_IVR, MENU_FILE, MISSED_IVR, file_size, machine_busy_s, parse_stat_csv, proc_cpu_s, read_from,
    thread_cpu_s)
from ivr.devtools.cluster import Cluster, cluster_ports  # noqa: E402
from ivr.devtools.sipp import Sipp  # noqa: E402
from ivr.devtools.sipp_scenarios import CallerScript  # noqa: E402
from ivr.devtools.stack import PORT_OFFSETS, Stack, StackError, _port_in_use, missing_tools, ports_for  # noqa: E402

SETUPS = ("single", "cluster")
DEFAULT_RATES = (90, 120, 150, 180, 210, 240, 270, 300)
QUICK_RATES = (10,)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BAR = 0.85                     # the proxy may cost at most 15 % of the single node's rate
CLUSTER_OFFSET = 2000          # the cluster's port base, above the single stack's (its ports: see layout())


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- ports
def layout(base: int, pairs: int) -> dict[str, Any]:
    """Where both set-ups listen, from one base B: the single stack at B (its RTP B+5000, ``pairs`` pairs), the
    cluster at B+2000 (Kamailio, Redis, two nodes), its nodes' RTP ranges right after the stack's."""
    single = ports_for(base)
    single_rtp = (base + PORT_OFFSETS["rtp_start"], base + PORT_OFFSETS["rtp_start"] + 2 * pairs - 1)
    cbase = base + CLUSTER_OFFSET
    cports = cluster_ports(cbase, 2)
    node_rtp = [(single_rtp[1] + 1 + i * 2 * pairs, single_rtp[1] + (i + 1) * 2 * pairs) for i in range(2)]
    return {"single_base": base, "single": single, "single_rtp": single_rtp, "cluster_base": cbase,
            "cluster": cports, "node_rtp": node_rtp}


def busy_ports(lay: dict[str, Any]) -> list[int]:
    s, c = lay["single"], lay["cluster"]
    tcp = [s["ami"], s["agi"], s["api"], s["redis"], c["redis"]] + [n[k] for n in c["nodes"] for k in ("ami", "agi", "api")]
    udp = [s["sip"], c["kamailio"], lay["single_rtp"][0]] + [n["sip"] for n in c["nodes"]] + [r[0] for r in lay["node_rtp"]]
    return [p for p in tcp if _port_in_use("127.0.0.1", p)] + [p for p in udp if _port_in_use("127.0.0.1", p, udp=True)]


def pick_base(pairs: int, start: int = 20000, stop: int = 52000, step: int = 2000) -> int:
    for base in range(start, stop, step):
        lay = layout(base, pairs)
        if lay["node_rtp"][1][1] < 65000 and not busy_ports(lay):
            return base
    raise BenchError(f"no free port range for a stack and a cluster between {start} and {stop}")


def group_cpu_s(pgid: int | None) -> float | None:
    """utime + stime of every process in process group ``pgid`` (Kamailio and the children it forked)."""
    if not pgid:
        return None
    total, found = 0.0, False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            found = True
    return total if found else None


def get_json(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


# ----------------------------------------------------------------------------- a set-up
@dataclass
class Node:
    name: str
    stack: Stack
    api: str

    @property
    def controller_log(self) -> Path:
        return self.stack.workdir / "logs" / "controller.log"


@dataclass
class Setup:
    name: str
    sip_port: int
    script: CallerScript
    nodes: list[Node]
    token: str
    redis_pid: int | None
    kamailio_pgid: int | None = None
    sipp: Sipp | None = None
    baseline_len: float = 0.0

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {"redis": self.redis_pid}
        for n in self.nodes:
            out[f"{n.name}.asterisk"] = n.stack._read_pid("asterisk")
            out[f"{n.name}.controller"] = n.stack._read_pid("controller")
        return out

    def cpu(self) -> dict[str, float | None]:
        out = {k: proc_cpu_s(p) for k, p in self.pids().items()}
        if self.kamailio_pgid is not None:
            out["kamailio"] = group_cpu_s(self.kamailio_pgid)
        return out

    def health(self) -> list[dict[str, Any]]:
        return [get_json(n.api + "/health", self.token) for n in self.nodes]

    def channels(self) -> int:
        total = 0
        for n in self.nodes:
            out = n.stack._asterisk_cli("core show channels count").stdout
            line = next((ln for ln in out.splitlines() if "active channel" in ln), "")
            if not line:
                return -1
            total += int(line.split()[0])
        return total

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.channels() == 0 and all(h["agi"]["active_calls"] == 0 for h in self.health()):
                    return
            except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.5)
        for n in self.nodes:
            n.stack._asterisk_cli("channel request hangup all")
        time.sleep(2)


# ----------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, workdir: Path, base: int, pairs: int, tolerance: float, out: Any = sys.stderr) -> None:
        self.workdir, self.base, self.pairs, self.tolerance, self.out = workdir, base, pairs, tolerance, out
        self.lay = layout(base, pairs)
        self.stack = Stack(workdir / "single")
        self.cluster = Cluster(workdir / "cluster")
        self.setups: dict[str, Setup] = {}
        self.current: subprocess.Popen[bytes] | None = None
        self.stack_up = self.cluster_up = False

    def log(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def _dialplans(self) -> Path:
        d = self.workdir / "dialplans"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "dialplans" / "main.yaml", d / "main.yaml")
        shutil.copy(MENU_FILE, d / "bench.yaml")
        return d

    def start(self) -> None:
        extra = {"dids": {DID_IVR: "bench"}, "dialplans_dir": str(self._dialplans())}
        lo, hi = self.lay["single_rtp"]
        self.stack.init(port_base=self.base, extra=extra)
        self.stack.init(extra={"asterisk": {"rtp_start": lo, "rtp_end": hi}})
        self.stack_up = True
        info = self.stack.up(timeout=120)
        self.setups["single"] = Setup(
            "single", int(info["sip"].rsplit(":", 1)[1]), CALLERS["key"], [Node("node", self.stack, info["api"])],
            info["token"], self.stack._read_pid("redis"))

        self.cluster.init(nodes=2, port_base=self.lay["cluster_base"], extra=extra)
        for i, (lo, hi) in enumerate(self.lay["node_rtp"]):
            self.cluster.node(i).init(extra={"asterisk": {"rtp_start": lo, "rtp_end": hi}})
        self.cluster_up = True
        cinfo = self.cluster.up(timeout=180)
        nodes = [Node(n["name"], self.cluster.node(i), n["api"]) for i, n in enumerate(cinfo["nodes"])]
        via = dataclasses.replace(CALLERS["key"], via_proxy=True)
        self.setups["cluster"] = Setup(
            "cluster", int(cinfo["sip"].rsplit(":", 1)[1]), via, nodes, cinfo["token"],
            self.cluster.redis().pids()["primary"], kamailio_pgid=self.cluster.kamailio().procs.pid("kamailio"))
        for s in self.setups.values():
            for h in s.health():
                if "bench" not in h.get("menus", {}).get("loaded", []):
                    raise BenchError(f"{s.name}: a controller did not load the bench menu: {h.get('menus')}")
            s.sipp = Sipp(target_port=s.sip_port, workdir=self.workdir / "sipp" / s.name)
        self.log(f"single stack up (SIP 127.0.0.1:{self.setups['single'].sip_port}, base {self.base}); cluster up "
                 f"(Kamailio 127.0.0.1:{self.setups['cluster'].sip_port}, base {self.lay['cluster_base']}, "
                 f"nodes {', '.join(n.name for n in nodes)})")

    def stop(self) -> None:
        proc = self.current
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        errors = []
        if self.cluster_up:
            try:
                self.cluster.down()
            except StackError as exc:
                errors.append(str(exc))
            self.cluster_up = False
        if self.stack_up:
            self.stack.down()
            self.stack_up = False
        if errors:
            raise BenchError("; ".join(errors))

    # ------------------------------------------------------------------ one step
    def step(self, name: str, rate: float, seconds: float, warmup: bool = False) -> dict[str, Any]:
        s = self.setups[name]
        assert s.sipp is not None
        calls = max(1, int(round(rate * seconds)))
        limit = int(min(max(50, rate * 5), self.pairs - 50))
        timeout_s = int(seconds * 1.25 + 60)
        s.wait_idle()
        argv = s.sipp.call_args(s.script, extension=DID_IVR, calls=calls, rate=rate, concurrent=limit,
                                timeout_s=timeout_s)
        stat_csv = Path(argv[argv.index("-stf") + 1])
        h0 = s.health()
        log_off = [file_size(n.controller_log) for n in s.nodes]
        cpu0 = s.cpu()
        busy0 = machine_busy_s()
        screen = s.sipp.workdir / f"screen-{rate:g}-{time.time():.0f}.txt"
        t0 = time.monotonic()
        with open(screen, "wb") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=s.sipp.workdir, start_new_session=True)
        self.current = proc
        main_thread = 0.0
        deadline = t0 + timeout_s + 30
        while True:
            pid_done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid_done:
                break
            main_thread = thread_cpu_s(proc.pid) or main_thread
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.25)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.current = None
        wall = time.monotonic() - t0
        cpu1 = s.cpu()
        busy = machine_busy_s() - busy0
        sipp_cpu = usage.ru_utime + usage.ru_stime

        def written(hs: list[dict[str, Any]]) -> int:
            return sum(int(h["records"]["written"]) for h in hs)

        h1 = s.health()
        end = time.monotonic() + 15          # records are closed 1 s after the AMI Hangup
        while written(h1) - written(h0) < calls and time.monotonic() < end:
            time.sleep(0.5)
            h1 = s.health()
        st = parse_stat_csv(stat_csv, calls)
        missed = sum(read_from(n.controller_log, off).count(m) for n, off in zip(s.nodes, log_off) for m in MISSED_IVR)
        per_node = {n.name: int(b["agi"]["calls"]) - int(a["agi"]["calls"]) for n, a, b in zip(s.nodes, h0, h1)}
        used = {k: (cpu1[k] - v) if v is not None and cpu1.get(k) is not None else None  # type: ignore[operator]
                for k, v in cpu0.items()}
        ours = sum(v for v in used.values() if v is not None) + sipp_cpu

        def ms(part: str, n_calls: int) -> float | None:
            v = used.get(part)
            return round(1000 * v / n_calls, 3) if v is not None and n_calls else None

        nodes_ms = {}
        for n in s.nodes:
            a, c = ms(f"{n.name}.asterisk", per_node[n.name]), ms(f"{n.name}.controller", per_node[n.name])
            nodes_ms[n.name] = {"calls": per_node[n.name], "asterisk": a, "controller": c,
                                "node": round(a + c, 3) if a is not None and c is not None else None}
        res: dict[str, Any] = {
            "setup": name, "rate": rate, "seconds": seconds, "calls": calls,
            "successful": st.get("SuccessfulCall(C)", 0), "failed": st.get("FailedCall(C)", 0),
            "retransmissions": st.get("Retransmissions(C)", 0),
            "unexpected": st.get("OutOfCallMsgs(C)", 0) + st.get("DeadCallMsgs(C)", 0),
            "dtmf_missed": missed, "sipp_rc": proc.returncode,
            "call_length_s": round(st.get("CallLength(C)", 0.0), 3),
            "max_concurrent": st.get("max_concurrent", 0), "concurrency_limit": limit,
            "placing_s": st.get("placing_s"), "wall_s": round(wall, 2),
            "agi_calls": sum(per_node.values()),
            "agi_failed": sum(int(b["agi"]["failed"]) - int(a["agi"]["failed"]) for a, b in zip(h0, h1)),
            "records_written": written(h1) - written(h0),
            "cpu_pct": {**{k: (round(100 * v / wall, 1) if v is not None else None) for k, v in used.items()},
                        "sipp": round(100 * sipp_cpu / wall, 1), "sipp_main_thread": round(100 * main_thread / wall, 1),
                        "other": round(100 * max(0.0, busy - ours) / wall, 1), "machine": round(100 * busy / wall, 1)},
            "ms_per_call": {"nodes": nodes_ms, "kamailio": ms("kamailio", calls), "redis": ms("redis", calls),
                            "sipp": round(1000 * sipp_cpu / calls, 3)},
            "sipp_screen": str(screen),
        }
        res["reasons"] = self.judge(s, res, warmup)
        res["passed"] = not res["reasons"]
        return res

    def judge(self, s: Setup, r: dict[str, Any], warmup: bool) -> list[str]:
        tol = int(self.tolerance * r["calls"])
        why = []
        if r["failed"] or r["successful"] != r["calls"] or r["sipp_rc"] != 0:
            why.append(f"{r['failed']} failed, {r['successful']}/{r['calls']} successful (SIPp exit {r['sipp_rc']})")
        if r["retransmissions"] > tol and not warmup:   # the warm-up's first calls meet cold caches
            why.append(f"{r['retransmissions']} retransmissions")
        if r["unexpected"] > tol:
            why.append(f"{r['unexpected']} unexpected messages")
        if r["dtmf_missed"] > tol:
            why.append(f"{r['dtmf_missed']} missed keys")
        if r["agi_failed"] or r["agi_calls"] != r["calls"]:
            why.append(f"AGI: {r['agi_calls']} calls, {r['agi_failed']} failed (fallback)")
        if r["records_written"] != r["calls"]:
            why.append(f"{r['records_written']}/{r['calls']} records written")
        if r["max_concurrent"] >= r["concurrency_limit"]:
            why.append(f"hit SIPp's -l {r['concurrency_limit']}")
        if not warmup:
            if r["placing_s"] is None or r["placing_s"] > r["seconds"] * 1.25 + 2:
                why.append(f"SIPp took {r['placing_s']} s to place the calls")
            if s.baseline_len and r["call_length_s"] > s.baseline_len + 1.0:
                why.append(f"mean call {r['call_length_s']:.2f} s vs {s.baseline_len:.2f} s at warm-up")
        return why

    def warm_up(self) -> None:
        for name, s in self.setups.items():
            r = self.step(name, 5, 2, warmup=True)
            if not r["passed"]:
                raise BenchError(f"warm-up of {name} failed: {'; '.join(r['reasons'])}\n"
                                 f"{Path(r['sipp_screen']).read_text(errors='replace')[-1500:]}")
            s.baseline_len = r["call_length_s"]
            self.log(f"warm-up {name}: 10 calls ok, mean call {r['call_length_s']:.2f} s")


# ----------------------------------------------------------------------------- summary
def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarize(steps: list[dict[str, Any]], rounds: int, cpus: int) -> dict[str, Any]:
    """Each complete round's best rates and ratio, their medians (``rounds``: how many rounds ran to their end;
    a round the time budget cut short is left out of the medians), and the CPU per call of the passing steps."""
    per_round: list[dict[str, Any]] = []
    for n in range(1, rounds + 1):
        best: dict[str, float | None] = {}
        for name in SETUPS:
            passed = [s["rate"] for s in steps if s["round"] == n and s["setup"] == name and s["passed"]]
            best[name] = max(passed) if passed else None
        a, b = best["single"], best["cluster"]
        per_round.append({"round": n, "best": best, "ratio": round(b / a, 3) if a and b else None})
    ratios = [r["ratio"] for r in per_round if r["ratio"] is not None]
    best_a = [r["best"]["single"] for r in per_round if r["best"]["single"]]
    best_b = [r["best"]["cluster"] for r in per_round if r["best"]["cluster"]]
    good = [s for s in steps if s["passed"]]

    def med(name: str, pick: Callable[[dict[str, Any]], float | None]) -> float | None:
        return _median([v for s in good if s["setup"] == name for v in [pick(s)] if v is not None])

    cpu: dict[str, dict[str, Any]] = {
        "single": {"asterisk": med("single", lambda s: s["ms_per_call"]["nodes"]["node"]["asterisk"]),
                   "controller": med("single", lambda s: s["ms_per_call"]["nodes"]["node"]["controller"]),
                   "redis": med("single", lambda s: s["ms_per_call"]["redis"]),
                   "sipp": med("single", lambda s: s["ms_per_call"]["sipp"])},
        "cluster": {"kamailio": med("cluster", lambda s: s["ms_per_call"]["kamailio"]),
                    "redis": med("cluster", lambda s: s["ms_per_call"]["redis"]),
                    "sipp": med("cluster", lambda s: s["ms_per_call"]["sipp"])},
    }
    def node_part(node: str, part: str) -> Callable[[dict[str, Any]], float | None]:
        def pick(s: dict[str, Any]) -> float | None:
            value: float | None = s["ms_per_call"]["nodes"][node][part]
            return value
        return pick

    for node in ("node1", "node2"):
        cpu["cluster"][node] = {k: med("cluster", node_part(node, k)) for k in ("asterisk", "controller", "node")}
    out: dict[str, Any] = {"rounds": per_round, "complete_rounds": rounds, "ratio_median": _median(ratios),
                           "single_rate_median": _median(best_a), "cluster_rate_median": _median(best_b),
                           "cpu_ms_per_call": cpu}
    # what one more machine adds: a node's CPU per call on cores of its own; Kamailio's per call
    node_ms = [cpu["cluster"][n]["node"] for n in ("node1", "node2") if cpu["cluster"][n]["node"] is not None]
    single_ms = (cpu["single"]["asterisk"] or 0) + (cpu["single"]["controller"] or 0)
    kam = cpu["cluster"]["kamailio"]
    if node_ms and kam:
        per_node = statistics.mean(node_ms)
        ceiling = 1000 * cpus / per_node
        out["projection"] = {
            "cores": cpus, "node_ms_per_call": round(per_node, 3), "single_node_ms_per_call": round(single_ms, 3),
            "node_ceiling_cps": round(ceiling),
            "kamailio_ms_per_call": kam, "kamailio_cps_per_core": round(1000 / kam),
            "nodes_per_kamailio_core": round(1000 / kam / ceiling, 1),
            "kamailio_share_of_node_cpu": round(kam / per_node, 3),
        }
    return out


def fmt_table(result: dict[str, Any]) -> str:
    head = ("round", "rate", "setup", "ok/calls", "fail", "retr", "miss", "len s", "kam ms", "node ms (ast+ctl)",
            "redis ms", "sipp%", "other%", "result")
    rows = []
    for s in result["steps"]:
        nodes = s["ms_per_call"]["nodes"]
        node_txt = ", ".join(f"{n}: {v['asterisk']}+{v['controller']} ({v['calls']})" for n, v in nodes.items())
        rows.append((s["round"], f"{s['rate']:g}", s["setup"], f"{s['successful']}/{s['calls']}", s["failed"],
                     s["retransmissions"], s["dtmf_missed"], f"{s['call_length_s']:.2f}",
                     s["ms_per_call"]["kamailio"] if s["ms_per_call"]["kamailio"] is not None else "-", node_txt,
                     s["ms_per_call"]["redis"], s["cpu_pct"]["sipp"], s["cpu_pct"]["other"],
                     "pass" if s["passed"] else "FAIL: " + "; ".join(s["reasons"])))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in (head, *rows)]
    out = [f"{result['seconds']:g} s per step, tolerance {result['tolerance']:g}, {result['cpus']} CPUs, "
           f"rates {', '.join(f'{r:g}' for r in result['rates'])}", *lines, ""]
    if result["rounds_started"] > result["complete_rounds"]:
        out.append(f"round {result['rounds_started']} was cut short (time budget or an error): left out of the medians")
    for r in result["rounds"]:
        b = r["best"]
        out.append(f"round {r['round']}: single (a) {b['single']} calls/s, Kamailio + 2 nodes (b) {b['cluster']} "
                   f"calls/s, b/a {r['ratio']}")
    ratio = result["ratio_median"]
    out.append(f"single node (a): {result['single_rate_median']} calls/s; Kamailio + two nodes (b): "
               f"{result['cluster_rate_median']} calls/s (medians over rounds); b/a = {ratio} "
               + (f"(bar: >= {BAR}: {'met' if ratio >= BAR else 'not met'} on this machine)" if ratio is not None
                  else "(no round where both passed a rate: not measured)"))
    c = result["cpu_ms_per_call"]
    out.append(f"CPU per call (ms, medians of the passing steps): single: Asterisk {c['single']['asterisk']}, "
               f"controller {c['single']['controller']}, Redis {c['single']['redis']}; cluster: Kamailio "
               f"{c['cluster']['kamailio']}, Redis {c['cluster']['redis']}, "
               + ", ".join(f"{n} Asterisk {c['cluster'][n]['asterisk']} + controller {c['cluster'][n]['controller']}"
                           for n in ("node1", "node2")))
    p = result.get("projection")
    if p:
        out.append(f"one more machine ({p['cores']} cores, a node of its own): {p['node_ms_per_call']} ms of "
                   f"Asterisk + controller CPU a call -> at most {p['node_ceiling_cps']} calls/s by CPU; Kamailio "
                   f"{p['kamailio_ms_per_call']} ms a call -> {p['kamailio_cps_per_core']} calls/s per core, "
                   f"{p['nodes_per_kamailio_core']} such nodes per Kamailio core "
                   f"(Kamailio's CPU = {100 * p['kamailio_share_of_node_cpu']:.1f} % of a node's per call)")
    out.append("note: both set-ups share this machine's cores: the cluster has no CPU the single node lacks, so b/a "
               "here is the proxy's cost plus the work split over two Asterisks, not what one more machine adds "
               "(that is the projection above)")
    if not result["complete"]:
        out.append("note: the run did not complete (interrupted, an error or the time budget): partial results")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rates", help=f"comma-separated rates, ascending (default {','.join(map(str, DEFAULT_RATES))})")
    p.add_argument("--seconds", type=float, help="seconds per step (default 12)")
    p.add_argument("--rounds", type=int, help="ladders, alternating which set-up goes first (default 3; quick 2)")
    p.add_argument("--budget", type=float, help="stop starting steps after this many seconds (default 540)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of about a minute: 10 calls/s for 4 s, two rounds")
    p.add_argument("--tolerance", type=float, default=0.002,
                   help="allowed retransmissions / unexpected messages / missed keys, a fraction of calls (0.002)")
    p.add_argument("--rtp-pairs", type=int, help="concurrent calls each Asterisk can carry (default 1000; quick 250)")
    p.add_argument("--port-base", type=int, help="port base B: the stack at B, the cluster at B+2000 (default: free)")
    p.add_argument("--workdir", help="workdir (default: a new temporary dir, removed at the end)")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    rates = sorted(float(x) for x in (args.rates or ",".join(map(str, QUICK_RATES if args.quick else DEFAULT_RATES)))
                   .split(",") if x.strip())
    seconds = args.seconds or (4.0 if args.quick else 12.0)
    rounds = args.rounds or (2 if args.quick else 3)
    budget = args.budget or (120.0 if args.quick else 540.0)
    pairs = args.rtp_pairs or (250 if args.quick else 1000)
    if not rates or any(r <= 0 for r in rates) or rounds < 1:
        p.error("--rates: positive numbers; --rounds: 1 or more")
    missing = missing_tools() + [t for t in ("kamailio", "kamcmd") if shutil.which(t) is None]
    if missing:
        p.error(f"{', '.join(missing)} not installed: run scripts/install.sh")

    made_tmp = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ivr-clusterbench-")).resolve()
    base = args.port_base or pick_base(pairs)
    bench = Bench(workdir, base, pairs, args.tolerance)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    steps: list[dict[str, Any]] = []
    started = time.monotonic()
    rc = 0
    over_budget = False
    completed = 0            # rounds run to their end
    try:
        bench.start()
        bench.warm_up()
        for rnd in range(1, rounds + 1):
            order = SETUPS if rnd % 2 else tuple(reversed(SETUPS))
            alive = list(order)
            for rate in rates:
                for name in list(alive):
                    if time.monotonic() - started > budget:
                        over_budget = True
                        break
                    bench.log(f"round {rnd}: {name} at {rate:g} calls/s for {seconds:g} s "
                              f"({int(round(rate * seconds))} calls)...")
                    r = bench.step(name, rate, seconds)
                    r["round"] = rnd
                    steps.append(r)
                    bench.log(f"  {'pass' if r['passed'] else 'FAIL: ' + '; '.join(r['reasons'])} "
                              f"(machine {r['cpu_pct']['machine']} %, other {r['cpu_pct']['other']} %)")
                    if not r["passed"]:
                        alive.remove(name)
                if not alive or over_budget:
                    break
            if over_budget:
                bench.log("time budget reached: no more steps")
                break
            completed = rnd
    except KeyboardInterrupt:
        bench.log("interrupted: stopping both set-ups")
        rc = 130
    except Exception as exc:  # noqa: BLE001 - reported, then both set-ups are stopped
        bench.log(f"error: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        try:
            bench.stop()
        except BenchError as exc:
            bench.log(f"error stopping: {exc}")
            rc = rc or 1
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = summarize(steps, completed, cpus)
    result.update({"rates": rates, "seconds": seconds, "tolerance": args.tolerance, "cpus": cpus,
                   "port_base": base, "cluster_port_base": base + CLUSTER_OFFSET, "workdir": str(workdir),
                   "duration_s": round(time.monotonic() - started, 1), "steps": steps,
                   "complete": rc == 0 and not over_budget, "over_budget": over_budget, "bar": BAR,
                   "rounds_started": max((s["round"] for s in steps), default=0),
                   "failed_calls": sum(s["failed"] for s in steps)})
    print(json.dumps(result, indent=2) if args.json else fmt_table(result))
    if made_tmp and not args.keep_workdir and rc == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    elif made_tmp:
        bench.log(f"workdir kept: {workdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
