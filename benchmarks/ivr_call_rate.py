"""Highest sustained call rate through the real Asterisk: the controller's IVR vs a static dialplan.

Two ways to run the same one-key menu (``benchmarks/menus/bench.yaml``), measured in the
same run, on the same Asterisk, side by side:

* **ivr** (A, number 510): ``from-trunk``: the caller-ID filters, Answer, ``AGI(agi://…/menu/bench)``
  (the controller's FastAGI server runs the menu: GET DATA ``beep`` 3 s for one key, then the
  ``hangup`` node: STREAM FILE ``beep``, SET VARIABLE ``IVR_NEXT``; the call record goes to
  Redis and is closed on the AMI ``Hangup`` event), then the dialplan's ``ivr-route`` Hangup.
* **static** (B, number 511): the same steps in plain dialplan, no controller involved::

      [bench-static]
      exten => s,1,Answer()
       same => n,Read(choice,beep,1,,1,3)
       same => n,ExecIf($["${choice}" != "1"]?Log(WARNING,bench-static: no key 1, got [${choice}]))
       same => n,Playback(beep)
       same => n,Hangup()

  (the ExecIf only logs a missed key, so DTMF misses are counted for B as they are for A).

How B gets into Asterisk without touching the templates: ``Stack.up()`` renders the
configuration and starts Asterisk in one go, and Asterisk reads only ``extensions.conf``.
So after ``up()`` the benchmark *appends* the ``bench-static`` context and a second
``[from-trunk]`` section with ``exten => 511`` (pbx_config merges sections of the same
name into one context; the exact 511 wins over the ``_X.`` catch-all) to
``<workdir>/asterisk/etc/extensions.conf``, runs
``asterisk -C <workdir>/asterisk/etc/asterisk.conf -rx "dialplan reload"`` and checks with
``dialplan show 511@from-trunk`` that it is loaded. A later ``ivr up`` re-renders the file.

The caller (one SIPp process per step, ``ivr.devtools.sipp.CallerScript``): INVITE, ACK, pause
400 ms, RFC 4733 DTMF "1", then wait for Asterisk's BYE (after the goodbye beep; a call
lasts ~1 s). ``--caller nokey`` presses nothing instead: the menu's 3 s timeout leads to
the same goodbye (~4 s a call; the RTP range is widened to 1500 calls for it), which
leaves out Asterisk's cost of receiving a key (see below). Each step runs at a fixed
rate R for D seconds (``-r R -m R*D``, ``-l`` generous, ``-timeout`` so nothing hangs). Rates ramp up; at each rate A runs, then B
(so machine noise hits both); a mode stops at its first failing rate and its highest
passing rate is its result. The ratio A_max / B_max is printed at the end.

A step passes when all of these hold (``--tolerance`` is a fraction of the calls, 0.2 %
by default, rounded down: at 20 calls it allows none):

* SIPp exits 0 with every call successful and 0 failed calls;
* retransmissions (``Retransmissions(C)`` of SIPp's ``-trace_stat`` CSV) and unexpected
  messages (``OutOfCallMsgs(C)`` + ``DeadCallMsgs(C)``) each <= tolerance;
* missed keys <= tolerance (A: the controller logged a timeout/invalid key instead of
  ``main chose 1``; B: the ExecIf warning above);
* A only: the FastAGI server saw exactly one AGI call per SIPp call and none failed (a
  failed AGI sends the caller to the fallback queue: that must not pass as success), and
  every call record was written to Redis;
* the stack kept up: SIPp placed all calls within 1.25 * D + 2 s and never hit its ``-l``
  concurrency limit, and the mean call length stayed within 1 s of the mode's warm-up
  mean (a stack that falls behind makes calls longer before it makes them fail).

Columns: ``ctl``, ``ast``, ``redis`` and ``sipp`` are CPU seconds per wall second of the
step (100 % = one core; from ``/proc/<pid>/stat`` utime+stime, SIPp's from ``wait4``;
``ms/call`` is the same CPU time divided by the step's calls),
``sipp-main`` is SIPp's main thread alone (its scheduler; near 100 % SIPp itself is the
limit and the step says so), ``other`` is what the rest of the machine used meanwhile
(``/proc/stat`` busy time minus the four above: another test run shows up here), ``RSS``
the controller's peak resident memory during the step.

The caller's media starts with 60 ms of audio at the answer, as a real phone's does
(``CallerScript.prelude_ms``). Without it the first RTP packet of the stream is the key's
RFC 4733 event, and Asterisk 16 then holds a duplicate DTMF begin frame on the channel's
read queue for the 45 ms minimum DTMF gap while busy-polling the RTP socket: ~40 ms of CPU
per call in both modes (measured with strace and Asterisk's DTMF log), which no real
caller causes and which filled both cores from ~40 calls/s in earlier runs of this
benchmark (``--caller key-noprelude`` reproduces them).

Usage::

    .venv/bin/python benchmarks/ivr_call_rate.py                          # 10..200 calls/s, 20 s each
    .venv/bin/python benchmarks/ivr_call_rate.py --rates 5 --seconds 4 --json
    .venv/bin/python benchmarks/ivr_call_rate.py --caller nokey --rates 20,40,80,120,160

Everything listens on 127.0.0.1 only; every SIPp run is bounded in calls and time; the
stack is stopped at the end, on errors and on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.devtools.sipp import CallerScript, Sipp  # noqa: E402
from ivr.devtools.stack import PORT_OFFSETS, Stack, StackError, missing_tools  # noqa: E402
from ivr.devtools.stack import pick_port_base as stack_pick_port_base  # noqa: E402

MENU_FILE = Path(__file__).resolve().parent / "menus" / "bench.yaml"
DID_IVR, DID_STATIC = "510", "511"
MODES = {"ivr": DID_IVR, "static": DID_STATIC}
DEFAULT_RATES = (10, 20, 40, 60, 80, 100, 120, 150, 180, 200)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
RTP_PAIRS = (PORT_OFFSETS["rtp_end"] - PORT_OFFSETS["rtp_start"] + 1) // 2   # concurrent calls Asterisk can carry
MISSED_IVR = (": main timed out", ": main invalid key")
MISSED_STATIC = "bench-static: no key 1"
CALLERS = {
    # press 1 at 400 ms (during the first beep), wait for Asterisk's BYE after the goodbye beep: ~1 s a call
    "key": CallerScript(steps=[("pause", 400), ("dtmf", "1")], end="wait_bye", wait_bye_ms=15_000),
    # the same without the audio a phone sends first: the key's event opens the RTP stream (see above)
    "key-noprelude": CallerScript(steps=[("pause", 400), ("dtmf", "1")], end="wait_bye", wait_bye_ms=15_000,
                                  prelude_ms=0),
    # press nothing: the 3 s menu timeout takes the same way out (~4 s a call, no RFC 4733 DTMF at all)
    "nokey": CallerScript(steps=(), end="wait_bye", wait_bye_ms=20_000),
}
# RTP ports Asterisk may use: the stack's default 500 pairs would cap SIPp near 450 calls in flight (~440
# calls/s of 1 s calls); "nokey" calls last 4x longer
KEY_RTP_PAIRS, NOKEY_RTP_PAIRS = 1000, 1500

STATIC_CONTEXT = f"""
; ---- appended by benchmarks/ivr_call_rate.py after `ivr up` (then `dialplan reload`):
; ---- the static-dialplan twin of dialplans/bench.yaml, on number {DID_STATIC}
[from-trunk]
exten => {DID_STATIC},1,Goto(bench-static,s,1)

[bench-static]
exten => s,1,Answer()
 same => n,Read(choice,beep,1,,1,3)
 same => n,ExecIf($["${{choice}}" != "1"]?Log(WARNING,{MISSED_STATIC}, got [${{choice}}]))
 same => n,Playback(beep)
 same => n,Hangup()
"""


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- helpers
def pick_port_base(start: int = 20000, stop: int = 30000, step: int = 4000, rtp_pairs: int = RTP_PAIRS) -> int:
    try:
        return stack_pick_port_base(start, stop, step, rtp_pairs)
    except StackError as exc:
        raise BenchError(str(exc)) from None


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu_s(pid: int) -> float | None:
    """utime + stime of a process's main thread only."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * PAGE_KB / 1024
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / CLK_TCK


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _hms(value: str) -> float:
    """SIPp's ``HH:MM:SS:uuuuuu`` (or ``HH:MM:SS``) as seconds."""
    parts = value.strip().split(":")
    try:
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        us = int(parts[3]) if len(parts) > 3 else 0
    except (ValueError, IndexError):
        return 0.0
    return h * 3600 + m * 60 + s + us / 1e6


def parse_stat_csv(path: Path, calls: int) -> dict[str, Any]:
    """Counters of a SIPp ``-trace_stat`` CSV (``;``-separated, one row per ``-fd`` period + a final row)."""
    out: dict[str, Any] = {"rows": 0}
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return out
    if len(lines) < 2:
        return out
    head = lines[0].rstrip(";").split(";")
    rows = [dict(zip(head, ln.split(";"))) for ln in lines[1:]]
    last = rows[-1]
    out["rows"] = len(rows)

    def num(row: dict[str, str], key: str) -> int:
        try:
            return int(float(row.get(key, "0") or 0))
        except ValueError:
            return 0

    def stamp(row: dict[str, str], key: str) -> float | None:
        try:
            return float(row[key].split()[-1])
        except (KeyError, ValueError, IndexError):
            return None

    for key in ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)",
                "FailedUnexpectedMessage(C)", "FailedMaxUDPRetrans(C)", "FailedTimeoutOnRecv(C)",
                "FailedCallRejected(C)", "OutgoingCall(C)", "WatchdogMajor(C)", "WatchdogMinor(C)",
                "Warnings(C)", "FatalErrors(C)"):
        out[key] = num(last, key)
    out["CallLength(C)"] = _hms(last.get("CallLength(C)", "0"))
    out["CallLengthStDev(C)"] = _hms(last.get("CallLengthStDev(C)", "0"))
    out["max_concurrent"] = max(num(r, "CurrentCall") for r in rows)
    start = stamp(last, "StartTime")
    placed_at = next((stamp(r, "CurrentTime") for r in rows if num(r, "OutgoingCall(C)") >= calls), None)
    out["placing_s"] = round(placed_at - start, 2) if start is not None and placed_at is not None else None
    return out


# ----------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, workdir: Path, port_base: int, tolerance: float, caller: str = "key",
                 out=sys.stderr) -> None:
        self.workdir = workdir
        self.caller = caller
        self.rtp_pairs = NOKEY_RTP_PAIRS if caller == "nokey" else KEY_RTP_PAIRS
        self.port_base = port_base
        self.tolerance = tolerance
        self.out = out
        self.stack = Stack(workdir)
        self.sipp: Sipp | None = None
        self.api = ""
        self.token = ""
        self.asterisk_conf = workdir / "asterisk" / "etc" / "asterisk.conf"
        self.extensions_conf = workdir / "asterisk" / "etc" / "extensions.conf"
        self.controller_log = workdir / "logs" / "controller.log"
        self.messages_log = workdir / "asterisk" / "log" / "messages"
        self.current_sipp: subprocess.Popen[bytes] | None = None
        self.baseline_len: dict[str, float] = {}
        self.up = False

    def log(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    # ------------------------------------------------------------------ set-up
    def start(self) -> dict[str, Any]:
        dialplans = self.workdir / "dialplans"
        dialplans.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "dialplans" / "main.yaml", dialplans / "main.yaml")
        shutil.copy(MENU_FILE, dialplans / "bench.yaml")
        self.stack.init(port_base=self.port_base,
                        extra={"dids": {DID_IVR: "bench"}, "dialplans_dir": str(dialplans)})
        if self.rtp_pairs != RTP_PAIRS:
            rtp_start = self.port_base + PORT_OFFSETS["rtp_start"]
            self.stack.init(extra={"asterisk": {"rtp_start": rtp_start, "rtp_end": rtp_start + 2 * self.rtp_pairs - 1}})
        self.up = True   # from here on, stop() runs down() whatever happens
        info = self.stack.up(timeout=60)
        self.api, self.token = info["api"], info["token"]
        health = self.health()
        if "bench" not in health.get("menus", {}).get("loaded", []):
            raise BenchError(f"the controller did not load the bench menu: {health.get('menus')}")
        self.install_static_context()
        self.sipp = Sipp(target_port=int(info["sip"].rsplit(":", 1)[1]), workdir=self.workdir / "sipp")
        return info

    def asterisk_cli(self, command: str, timeout: float = 10) -> str:
        binary = self.stack.config().asterisk.binary
        res = subprocess.run([binary, "-C", str(self.asterisk_conf), "-rx", command],
                             capture_output=True, text=True, timeout=timeout)
        return res.stdout + res.stderr

    def install_static_context(self) -> None:
        text = self.extensions_conf.read_text(encoding="utf-8")
        if "[bench-static]" not in text:
            self.extensions_conf.write_text(text.rstrip("\n") + "\n" + STATIC_CONTEXT, encoding="utf-8")
        out = self.asterisk_cli("dialplan reload")
        shown = self.asterisk_cli(f"dialplan show {DID_STATIC}@from-trunk")
        routed = self.asterisk_cli(f"dialplan show {DID_IVR}@from-trunk")
        if "bench-static" not in shown or "/menu/" not in routed:
            raise BenchError(f"the static context did not load ({out.strip()}):\n{shown}\n{routed}")

    def pid(self, name: str) -> int | None:
        try:
            return int((self.workdir / "pids" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def health(self) -> dict[str, Any]:
        req = urllib.request.Request(self.api + "/health", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def channels(self) -> int:
        text = self.asterisk_cli("core show channels count")
        for line in text.splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        return -1

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Until Asterisk carries no channel and the controller runs no AGI call."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.channels() == 0 and self.health()["agi"]["active_calls"] == 0:
                    return True
            except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.5)
        self.log("  (stack not idle after a step: hanging up what is left)")
        self.asterisk_cli("channel request hangup all")
        time.sleep(2)
        return False

    def stop(self) -> None:
        proc = self.current_sipp
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.up:
            self.stack.down()
            self.up = False

    # ------------------------------------------------------------------ one step
    def step(self, mode: str, rate: float, seconds: float, warmup: bool = False) -> dict[str, Any]:
        assert self.sipp is not None
        calls = max(1, int(round(rate * seconds)))
        limit = int(min(max(50, rate * (8 if self.caller == "nokey" else 5)), self.rtp_pairs - 50))
        timeout_s = int(seconds * 1.25 + 60)
        self.wait_idle()
        script = CALLERS[self.caller]
        argv = self.sipp.call_args(script, extension=MODES[mode], calls=calls, rate=rate, concurrent=limit,
                                   timeout_s=timeout_s)
        stat_csv = Path(argv[argv.index("-stf") + 1])
        pids = {n: self.pid(n) for n in ("controller", "asterisk", "redis")}
        h0 = self.health()
        log_off = file_size(self.controller_log)
        msg_off = file_size(self.messages_log)
        cpu0 = {n: proc_cpu_s(p) for n, p in pids.items()}
        busy0 = machine_busy_s()
        rss_peak = proc_rss_mb(pids["controller"]) or 0.0
        screen = self.workdir / "sipp" / f"screen-{mode}-{rate:g}.txt"
        t0 = time.monotonic()
        with open(screen, "wb") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=self.sipp.workdir, start_new_session=True)
        self.current_sipp = proc
        main_thread = 0.0
        status, usage = None, None
        deadline = t0 + timeout_s + 30
        while True:
            pid_done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid_done:
                break
            main_thread = thread_cpu_s(proc.pid) or main_thread
            rss_peak = max(rss_peak, proc_rss_mb(pids["controller"]) or 0.0)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.25)
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here, not by Popen
        self.current_sipp = None
        wall = time.monotonic() - t0
        cpu1 = {n: proc_cpu_s(p) for n, p in pids.items()}
        busy = machine_busy_s() - busy0
        sipp_cpu = usage.ru_utime + usage.ru_stime

        # records are closed 1 s after the AMI Hangup: give them a moment before counting
        expected_records = calls if mode == "ivr" else 0
        h1 = self.health()
        end = time.monotonic() + 15
        while (h1["records"]["written"] - h0["records"]["written"] < expected_records
               and time.monotonic() < end):
            time.sleep(0.5)
            h1 = self.health()
        st = parse_stat_csv(stat_csv, calls)
        ctl_log = read_from(self.controller_log, log_off)
        msgs = read_from(self.messages_log, msg_off)
        # calls whose menu did not see what the caller did (key: no "1"; nokey: no timeout)
        if mode == "ivr":
            missed = sum(ctl_log.count(m) for m in MISSED_IVR)
        else:
            missed = msgs.count(MISSED_STATIC)
        if self.caller == "nokey":
            missed = calls - missed

        def share(name: str) -> float | None:
            a, b = cpu0.get(name), cpu1.get(name)
            return round(100 * (b - a) / wall, 1) if a is not None and b is not None else None

        shares = {n: share(n) for n in pids}
        ours = sum(((cpu1[n] or 0) - (cpu0[n] or 0)) for n in pids) + sipp_cpu
        res: dict[str, Any] = {
            "mode": mode, "rate": rate, "seconds": seconds, "calls": calls,
            "successful": st.get("SuccessfulCall(C)", 0), "failed": st.get("FailedCall(C)", 0),
            "retransmissions": st.get("Retransmissions(C)", 0),
            "unexpected": st.get("OutOfCallMsgs(C)", 0) + st.get("DeadCallMsgs(C)", 0),
            "failed_detail": {k: st.get(k, 0) for k in ("FailedUnexpectedMessage(C)", "FailedMaxUDPRetrans(C)",
                                                        "FailedTimeoutOnRecv(C)", "FailedCallRejected(C)")},
            "dtmf_missed": missed,
            "sipp_rc": proc.returncode,
            "call_length_s": round(st.get("CallLength(C)", 0.0), 3),
            "call_length_sd_s": round(st.get("CallLengthStDev(C)", 0.0), 3),
            "max_concurrent": st.get("max_concurrent", 0), "concurrency_limit": limit,
            "placing_s": st.get("placing_s"),
            "wall_s": round(wall, 2),
            "cpu_pct": {"controller": shares["controller"], "asterisk": shares["asterisk"],
                        "redis": shares["redis"], "sipp": round(100 * sipp_cpu / wall, 1),
                        "sipp_main_thread": round(100 * main_thread / wall, 1),
                        "other": round(100 * max(0.0, busy - ours) / wall, 1),
                        "machine": round(100 * busy / wall, 1)},
            "cpu_ms_per_call": {n: (round(1000 * ((cpu1[n] or 0) - (cpu0[n] or 0)) / calls, 2)
                                    if cpu0[n] is not None and cpu1[n] is not None else None) for n in pids},
            "controller_rss_mb": round(rss_peak, 1),
            "sipp_watchdog": st.get("WatchdogMajor(C)", 0) + st.get("WatchdogMinor(C)", 0),
            "agi_calls": h1["agi"]["calls"] - h0["agi"]["calls"],
            "agi_failed": h1["agi"]["failed"] - h0["agi"]["failed"],
            "records_written": h1["records"]["written"] - h0["records"]["written"],
            "record_write_errors": h1["records"]["write_errors"] - h0["records"]["write_errors"],
            "stat_csv": str(stat_csv), "sipp_screen": str(screen),
        }
        reasons = self.judge(res, warmup)
        res["passed"] = not reasons
        res["reasons"] = reasons
        res["sipp_limited"] = (res["cpu_pct"]["sipp_main_thread"] >= 90 or res["sipp_watchdog"] > 0)
        return res

    def judge(self, r: dict[str, Any], warmup: bool) -> list[str]:
        tol = int(self.tolerance * r["calls"])
        why = []
        if r["failed"] or r["successful"] != r["calls"] or r["sipp_rc"] != 0:
            why.append(f"{r['failed']} failed, {r['successful']}/{r['calls']} successful (SIPp exit {r['sipp_rc']})")
        if r["retransmissions"] > tol:
            why.append(f"{r['retransmissions']} retransmissions")
        if r["unexpected"] > tol:
            why.append(f"{r['unexpected']} unexpected messages")
        if r["dtmf_missed"] > tol:
            why.append(f"{r['dtmf_missed']} missed keys")
        if r["mode"] == "ivr":
            if r["agi_failed"] or r["agi_calls"] != r["calls"]:
                why.append(f"AGI: {r['agi_calls']} calls, {r['agi_failed']} failed (fallback)")
            if r["records_written"] != r["calls"] or r["record_write_errors"]:
                why.append(f"{r['records_written']}/{r['calls']} records written")
        elif r["agi_calls"]:
            why.append(f"{r['agi_calls']} static calls reached the controller")
        if r["max_concurrent"] >= r["concurrency_limit"]:
            why.append(f"hit SIPp's -l {r['concurrency_limit']}")
        if not warmup:
            if r["placing_s"] is None or r["placing_s"] > r["seconds"] * 1.25 + 2:
                why.append(f"SIPp took {r['placing_s']} s to place the calls")
            base = self.baseline_len.get(r["mode"])
            if base and r["call_length_s"] > base + 1.0:
                why.append(f"mean call {r['call_length_s']:.2f} s vs {base:.2f} s at warm-up")
        return why

    def warm_up(self) -> None:
        for mode in MODES:
            r = self.step(mode, 5, 2, warmup=True)
            if not r["passed"]:
                raise BenchError(f"warm-up of {mode} failed: {'; '.join(r['reasons'])}\n"
                                 f"{Path(r['sipp_screen']).read_text(errors='replace')[-1500:]}")
            self.baseline_len[mode] = r["call_length_s"]
            self.log(f"warm-up {mode}: 10 calls ok, mean call {r['call_length_s']:.2f} s")


# ----------------------------------------------------------------------------- report
def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def format_table(result: dict[str, Any]) -> str:
    head = ("rate", "mode", "ok/calls", "fail", "retr", "unexp", "miss", "len s", "conc", "place s",
            "ctl%", "ctl ms/call", "RSS MB", "ast%", "ast ms/call", "redis%", "sipp%", "main%", "other%", "result")
    rows = []
    for step in result["steps"]:
        c = step["cpu_pct"]
        verdict = "pass" if step["passed"] else "FAIL: " + "; ".join(step["reasons"])
        if step["sipp_limited"]:
            verdict += " [SIPp-limited]"
        mode = step["mode"] if step.get("round", 1) == 1 and len(result.get("rounds", [])) <= 1 \
            else f"{step['mode']}/{step.get('round', 1)}"
        rows.append((f"{step['rate']:g}", mode, f"{step['successful']}/{step['calls']}", step["failed"],
                     step["retransmissions"], step["unexpected"], step["dtmf_missed"],
                     f"{step['call_length_s']:.2f}", step["max_concurrent"], _fmt(step["placing_s"]),
                     _fmt(c["controller"]), _fmt(step["cpu_ms_per_call"]["controller"]),
                     _fmt(step["controller_rss_mb"]), _fmt(c["asterisk"]), _fmt(step["cpu_ms_per_call"]["asterisk"]),
                     _fmt(c["redis"]), _fmt(c["sipp"]), _fmt(c["sipp_main_thread"]), _fmt(c["other"]), verdict))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    widths[-1] = 0
    lines = ["  ".join(str(x).rjust(w) if i < len(head) - 1 else str(x) for i, (x, w) in enumerate(zip(r, widths)))
             for r in (head, *rows)]
    lines.insert(1, "-" * min(160, sum(widths) + 2 * len(widths) + 30))
    out = [f"caller: {result['caller']}, {result['seconds']:g} s per rate, tolerance {result['tolerance']:g}, "
           f"{result['cpus']} CPUs", "\n".join(lines), ""]
    for mode, m in result["modes"].items():
        if not m["steps"]:
            out.append(f"{mode:>6}: not measured")
            continue
        top = f"{m['max_rate']:g} calls/s" if m["max_rate"] is not None else "none (failed the first rate)"
        if m["capped"]:
            top = f">= {top} (passed every rate tried)"
        elif m["first_fail"] is not None:
            top += f" (failed at {m['first_fail']:g})"
        out.append(f"{mode:>6}: highest sustained rate {top}")
    if len(result.get("rounds", [])) > 1:
        for r in result["rounds"]:
            rates = ", ".join(f"{m} {v:g}" if v is not None else f"{m} none" for m, v in r["max_rate"].items())
            out.append(f" round {r['round']}: highest sustained {rates}; ratio ivr/static: {r['ratio_text']}")
        ratios = [r["ratio"] for r in result["rounds"] if r["ratio"] is not None]
        if ratios:
            out.append(f" ratio ivr/static over {len(result['rounds'])} rounds: median {result['ratio_median']:g}, "
                       f"range {min(ratios):g}-{max(ratios):g}")
    else:
        out.append(f" ratio ivr/static: {result['ratio_text']}")
    if not result["complete"]:
        out.append("  note: the run did not complete (interrupted or an error: see above); partial results")
    for note in result["notes"]:
        out.append(f"  note: {note}")
    return "\n".join(out)


def summarize(steps: list[dict[str, Any]], rates: list[float]) -> dict[str, Any]:
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [s for s in steps if s["mode"] == mode]
        passed = [s["rate"] for s in mine if s["passed"]]
        fail = next((s["rate"] for s in mine if not s["passed"]), None)
        modes[mode] = {"did": MODES[mode], "max_rate": max(passed) if passed else None,
                       "first_fail": fail, "capped": fail is None and bool(mine) and mine[-1]["rate"] == rates[-1],
                       "steps": mine}
    a, b = modes["ivr"]["max_rate"], modes["static"]["max_rate"]
    ratio = round(a / b, 3) if a and b else None
    if ratio is None:
        text = "n/a (a mode passed no rate)"
    elif modes["ivr"]["capped"] and modes["static"]["capped"]:
        text = f"{ratio:g} (both passed every rate: the ramp, not the stack, was the limit)"
    elif modes["static"]["capped"]:
        text = f"<= {ratio:g} (static passed every rate: its true limit is higher)"
    elif modes["ivr"]["capped"]:
        text = f">= {ratio:g} (ivr passed every rate)"
    else:
        text = f"{ratio:g}"
    notes = []
    for s in steps:
        if s["sipp_limited"]:
            notes.append(f"{s['mode']} at {s['rate']:g}/s: SIPp's main thread at {s['cpu_pct']['sipp_main_thread']} % "
                         f"(watchdog {s['sipp_watchdog']}): SIPp itself may be the limit there")
    noisy = [s for s in steps if (s["cpu_pct"]["other"] or 0) > 25]
    if noisy:
        notes.append("other processes used > 25 % of a core during "
                     + ", ".join(f"{s['mode']}@{s['rate']:g}" for s in noisy) + ": figures there are noisy")
    return {"modes": modes, "ratio": ratio, "ratio_text": text, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES),
                   help="comma-separated call rates (calls/s), ascending (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per step (default 20)")
    p.add_argument("--workdir", help="stack workdir (default: a new temporary dir, removed at the end)")
    p.add_argument("--port-base", type=int, help="port base of the stack (default: the first free of 20000, 22000, …)")
    p.add_argument("--tolerance", type=float, default=0.002,
                   help="allowed retransmissions / unexpected messages / missed keys, as a fraction of calls (0.002)")
    p.add_argument("--modes", default="ivr,static", help="modes to run (default ivr,static)")
    p.add_argument("--caller", choices=sorted(CALLERS), default="key",
                   help="key (default): press 1 during the prompt; nokey: press nothing, the 3 s timeout "
                        "ends the menu the same way (no DTMF: isolates Asterisk's per-key cost); "
                        "key-noprelude: as key, without the audio a phone sends first")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the whole ladder this many times on the same stack and report each round's ratio "
                        "and their median (the machines are noisy; default 1)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary workdir (logs, SIPp stats)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    rates = sorted(float(x) for x in args.rates.split(",") if x.strip())
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.rounds < 1:
        p.error("--rounds must be 1 or more")
    if not rates or any(r <= 0 for r in rates) or any(m not in MODES for m in modes):
        p.error("--rates must be positive numbers; --modes a subset of ivr,static")
    if missing_tools():
        p.error(f"{', '.join(missing_tools())} not installed: run scripts/install.sh")

    made_tmp = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ivr-bench-")).resolve()
    rtp_pairs = NOKEY_RTP_PAIRS if args.caller == "nokey" else KEY_RTP_PAIRS
    port_base = args.port_base or pick_port_base(rtp_pairs=rtp_pairs)
    bench = Bench(workdir, port_base, args.tolerance, args.caller)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    steps: list[dict[str, Any]] = []
    started = time.time()
    rc = 0
    try:
        info = bench.start()
        bench.log(f"stack up in {workdir} (SIP {info['sip']}, port base {port_base}); "
                  f"{DID_IVR} -> menu bench over FastAGI, {DID_STATIC} -> static dialplan")
        bench.warm_up()
        for rnd in range(args.rounds):
            alive = list(modes)
            for rate in rates:
                for mode in list(alive):
                    bench.log(f"{'round ' + str(rnd + 1) + ': ' if args.rounds > 1 else ''}{mode} at {rate:g} "
                              f"calls/s for {args.seconds:g} s ({int(round(rate * args.seconds))} calls)…")
                    r = bench.step(mode, rate, args.seconds)
                    r["round"] = rnd + 1
                    steps.append(r)
                    bench.log(f"  {'pass' if r['passed'] else 'FAIL: ' + '; '.join(r['reasons'])} "
                              f"(ctl {r['cpu_pct']['controller']} %, ast {r['cpu_pct']['asterisk']} %, "
                              f"sipp {r['cpu_pct']['sipp']} %, other {r['cpu_pct']['other']} %)")
                    if not r["passed"]:
                        alive.remove(mode)
                if not alive:
                    break
    except KeyboardInterrupt:
        bench.log("interrupted: stopping the stack")
        rc = 130
    except Exception as exc:
        bench.log(f"error: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        bench.stop()
    rounds = [summarize([s for s in steps if s.get("round", 1) == n], rates) for n in range(1, args.rounds + 1)]
    result = {**rounds[0], "notes": [n for r in rounds for n in r["notes"]]}
    ratios = sorted(r["ratio"] for r in rounds if r["ratio"] is not None)
    result["rounds"] = [{"round": i + 1, "ratio": r["ratio"], "ratio_text": r["ratio_text"],
                         "max_rate": {m: r["modes"][m]["max_rate"] for m in MODES}} for i, r in enumerate(rounds)]
    result["ratio_median"] = ratios[len(ratios) // 2] if ratios else None
    result.update({
        "rates": rates, "seconds": args.seconds, "caller": args.caller, "tolerance": args.tolerance, "port_base": port_base,
        "workdir": str(workdir), "cpus": os.cpu_count(), "duration_s": round(time.time() - started, 1),
        "steps": steps, "complete": rc == 0,
        "menu": str(MENU_FILE.relative_to(ROOT)), "dids": dict(MODES),
    })
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    if made_tmp and not args.keep_workdir and rc == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    elif made_tmp:
        bench.log(f"workdir kept: {workdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
