"""Runs the crisis-hour replay (ivr.devtools.crisis) on a private stack: static or the controller's whole line.

Each run has its own stack (fresh Asterisk queue statistics, fresh Redis), started by ``Stack`` with the
roster of the hour; the SIPp agent phones are started once and answer both runs (the same phones, the
same per-call talk times). Everything is bounded: callers' SIPp processes get ``-timeout``, the run
waits at most arrivals + ``drain_s``, and ``stop()`` (also on Ctrl-C) stops every process it started.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

from . import connect_latency, crisis, crisis_report
from ..app.config import PROJECT_ROOT
from ..app.config_load import load_secrets
from .sipp import Sipp, free_port
from .stack import Stack, StackError, pick_port_base, seed_refund

NOTICE_CAMPAIGN = "crisis-notice"
# the demo's customers (ivr.devtools.demo.DEMO_CONTACT_ENDINGS): the last digit picks what the SIPp phone does
NOTICE_ENDINGS = ("1", "4", "5", "6", "9", "2", "1", "4")




@dataclass
class Options:
    workdir: Path
    profile: Path = crisis.DEFAULT_PROFILE
    seed: int | None = None
    hour: int | None = None
    factor: float = 10.0
    press0: float = 0.2              # share of self-service callers who then press 0 for an agent
    window_s: float | None = None    # only the first seconds (compressed) of the hour (smoke runs)
    drain_s: float = 150.0           # after the last arrival, at most this long for the calls to end
    notices: int | None = None       # contacts of a notice campaign just before the wave (None: none)
    notice_lead_s: float = 10.0      # the campaign starts this long (compressed) before the first caller
    tick: float = 1.0                # balance.interval of the controller run
    port_base: int | None = None
    cap_s: float | None = None       # smoke runs: patience and handle times capped at this (compressed)


class Replay:
    """Prepares the trace, the roster and the agent phones; ``run(mode)`` replays it on a fresh stack."""

    def __init__(self, opts: Options, out: TextIO = sys.stderr, live: bool = False) -> None:
        self.opts, self.out, self.live = opts, out, live
        self.profile, notices = crisis.load_profile_raw(opts.profile)
        self.profile.retry_share = 0.0     # SIPp callers who give up do not call again: nor in the prediction
        # what does not compress (app_queue's turn and the phone's ring on every call) is measured on each
        # run (connect_latency) and put into the prediction afterwards (Profile.connect_s)
        self.profile.connect_s = 0.0
        p = self.profile
        self.seed = p.seed if opts.seed is None else opts.seed
        self.hour = crisis.peak_hour(p) if opts.hour is None else opts.hour
        # the profile's notice campaign runs over the whole day (thousands of contacts): the compressed hour
        # has none unless asked for (--notices N), and the simulator's prediction is made without it too
        self.notices = int(opts.notices or 0)
        self.trace = crisis.build_trace(p, self.seed, self.hour, opts.factor, opts.press0, opts.window_s)
        if opts.cap_s:
            cap = opts.cap_s
            self.trace = [dataclasses.replace(c, patience=min(c.patience, cap), handle=min(c.handle, cap))
                          for c in self.trace]
        self.scaled = crisis.Scaled.of(p, opts.factor, opts.tick)
        self.roster = crisis.roster_at(p, self.hour)
        if not self.roster:
            raise StackError(f"nobody is on duty at {self.hour:02d}:00 in {opts.profile}")
        opts.workdir.mkdir(parents=True, exist_ok=True)
        self.agent_ports = {str(2001 + i): free_port() for i in range(len(self.roster))}
        self.carrier_port = free_port()
        self.phones: list[subprocess.Popen[bytes]] = []
        self.callers: list[crisis.CallerRun] = []
        self.stack: Stack | None = None
        self.span = max((c.t for c in self.trace), default=0.0)
        self.bound_s = int(self.span + opts.drain_s + opts.notice_lead_s + 120)
        self.agent_sipp = Sipp(workdir=opts.workdir / "sipp-agents")

    @property
    def _up(self) -> Stack:
        """The stack of the run in progress (``run`` brings it up first)."""
        if self.stack is None:
            raise StackError("no stack is up")
        return self.stack

    def log(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    # ----------------------------------------------------------------- agents
    def start_phones(self) -> None:
        """The agent phones (both runs) and the customers' phones behind the loopback carrier."""
        nf = self.profile.novice_factor
        agents = [(aid, port, nf if a.skill == "novice" else 1.0)
                  for (aid, port), a in zip(self.agent_ports.items(), self.roster)]
        bound = 2 * self.bound_s + 300
        self.phones = crisis.start_agents(self.agent_sipp, agents, self.trace,
                                          self.profile.handle_mean_s / self.opts.factor, bound)
        self.phones.append(self.agent_sipp.start_callees(self.carrier_port, talk_ms=600_000, timeout_s=bound))

    def agents_config(self, mode: str) -> list[dict[str, Any]]:
        out = []
        for (aid, port), a in zip(self.agent_ports.items(), self.roster):
            static = mode == "static"
            out.append({"id": aid, "name": a.id, "skill": "experienced" if static else a.skill,
                        "tier": "core" if static else a.tier, "team": a.team or "core",
                        "queues": list(a.queues), "contact": f"sip:{aid}@127.0.0.1:{port}", "logged_in": True})
        return out

    # ------------------------------------------------------------------ stack
    def _stack_up(self, mode: str) -> dict[str, Any]:
        o, s = self.opts, self.scaled
        wd = o.workdir / mode
        if wd.exists():
            shutil.rmtree(wd)
        dialplans = wd / "dialplans"
        dialplans.mkdir(parents=True)
        (dialplans / "main.yaml").write_text(
            crisis.scaled_menu((PROJECT_ROOT / "dialplans" / "main.yaml").read_text(encoding="utf-8"),
                               s.callback_over), encoding="utf-8")
        start = (o.port_base or 20000) + (2000 if o.port_base and mode == "controller" else 0)
        base = pick_port_base(start, start + 20000, 2000, 500)   # the first free from there
        if mode == "static":   # the same agents, one flat tier: the policy's desired state is all of them at 0
            balance = {"simple_queues": [], "interval": o.tick, "open_wait_s": 1e9, "close_wait_s": 1e9,
                       "open_sl": 0.0}   # no tier ever opens (there are no volunteers to bring in anyway)
        else:
            balance = {"open_wait_s": round(s.open_wait_s, 2), "close_wait_s": round(s.close_wait_s, 2),
                       "min_open_s": round(s.min_open_s, 2), "interval": o.tick, "promise": s.promise_config()}
        self.stack = Stack(wd)
        self.stack.init(port_base=base, extra={
            "agents": self.agents_config(mode), "dialplans_dir": str(dialplans),
            "asterisk": {"trunk_uri": f"sip:127.0.0.1:{self.carrier_port}", "outbound_callerid": "5550100"},
            "queues": [{"name": q, "servicelevel": s.servicelevel} for q in self.profile.queue_names()],
            "balance": balance})
        info = self.stack.up(timeout=90)
        ext = self.stack.asterisk_etc / "extensions.conf"
        ext.write_text(ext.read_text(encoding="utf-8") +
                       (crisis.static_context() if mode == "static" else crisis.controller_context()),
                       encoding="utf-8")
        self.stack._asterisk_cli("dialplan reload")
        did = crisis.STATIC_DIDS["refunds"] if mode == "static" else crisis.DID_IVR
        shown = self.stack._asterisk_cli(f"dialplan show {did}@from-trunk").stdout
        if f"'{did}'" not in shown:
            raise StackError(f"the {mode} dialplan did not load: {shown[-500:]}")
        if mode == "controller":
            seed_refund(self.stack.config(), crisis.BOOKINGS["refund_status"])
        return info

    def get(self, info: dict[str, Any], path: str) -> Any:
        req = urllib.request.Request(info["api"] + path, headers={"Authorization": f"Bearer {info['token']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def post(self, info: dict[str, Any], path: str, body: Any, ctype: str = "application/json") -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(info["api"] + path, data=data, method="POST",
                                     headers={"Authorization": f"Bearer {info['token']}", "Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def _wait_members(self, info: dict[str, Any], want: int, timeout: float = 20.0) -> int:
        deadline = time.time() + timeout
        n = 0
        while time.time() < deadline:
            qs = self.get(info, "/api/v1/queues")["queues"]
            n = len({m["interface"] for q in qs.values() for m in q.get("members", [])})
            if n >= want:
                break
            time.sleep(0.5)
        return n

    def _start_notices(self, info: dict[str, Any]) -> None:
        self.post(info, "/api/v1/campaigns", {
            "id": NOTICE_CAMPAIGN, "name": "Crisis hour: cancelled flights", "message": {"en": "notice-cancelled"},
            "amd": False, "window": {"start": "00:00", "end": "23:59"}, "max_attempts": 2, "ring_timeout": 8,
            "retry": {k: 20 for k in ("busy", "no_answer", "failed", "no_key", "machine", "unknown")},
            "pacing": {"cps": 1, "max_channels": 4, "max_transfers": 1}, "allowed_prefixes": ["+1"]})
        rows = ["number,name,booking"] + [f"+1202557{i:03d}{NOTICE_ENDINGS[i % len(NOTICE_ENDINGS)]},"
                                          f"Customer {i + 1},{600100 + i}" for i in range(self.notices)]
        rep = self.post(info, f"/api/v1/campaigns/{NOTICE_CAMPAIGN}/contacts", ("\n".join(rows) + "\n").encode(),
                        "text/csv")
        self.post(info, f"/api/v1/campaigns/{NOTICE_CAMPAIGN}/start", None)
        self.log(f"notice campaign {NOTICE_CAMPAIGN}: {rep['imported']} customers told their flight is cancelled, "
                 "before the wave (1 call/s)")

    # ------------------------------------------------------------------- run
    def run(self, mode: str) -> dict[str, Any]:
        """One replay of the trace; the figures of the run (see ``collect``)."""
        if mode not in ("static", "controller"):
            raise ValueError("mode: static or controller")
        o = self.opts
        info = self._stack_up(mode)
        want = len(self.roster) if mode == "static" else sum(1 for a in self.roster if a.tier == "core")
        members = self._wait_members(info, want)
        h0 = self.get(info, "/health")
        tail = crisis.LogTail(self._up.logs / "controller.log")
        tail.skip_to_end()
        self.log(f"[{mode}] stack up ({info['sip']}); dashboard: {info['api']}/  (token in "
                 f"{self._up.secrets_path}); {members} agents in the queues")
        lead = 0.0
        if mode == "controller" and self.notices:
            self._start_notices(info)
            lead = o.notice_lead_s
        t0 = time.time() + lead + 1.0
        sipp = Sipp(target_port=self._up.config().asterisk.sip_port,
                    workdir=o.workdir / mode / "sipp")
        groups: dict[str, tuple[Sequence[tuple[str, str | int]], list[crisis.TraceCall]]]
        if mode == "static":
            groups = {"static": ([], list(self.trace))}
            self.callers = crisis.start_callers(sipp, groups, lambda c: crisis.STATIC_DIDS[c.queue], t0,
                                                self.bound_s)
        else:
            by: dict[tuple[str, str, bool, bool], list[crisis.TraceCall]] = {}
            for c in self.trace:
                by.setdefault(crisis.group_key(c), []).append(c)
            groups = {f"{k[0]}-{k[1]}{'-0' if k[2] else ''}{'-cb' if k[3] else ''}":
                      (crisis.key_steps(v[0]), v) for k, v in sorted(by.items())}
            self.callers = crisis.start_callers(sipp, groups, lambda c: crisis.DID_IVR, t0, self.bound_s)
        self.log(f"[{mode}] replaying {len(self.trace)} callers over {self.span:.0f} s (x{o.factor:g} compressed "
                 f"hour {self.hour:02d}:00 of {self.profile.name}, seed {self.seed}) to {len(self.roster)} agents; "
                 f"{len(self.callers)} SIPp caller processes")
        tap = self._tap()
        samples, events = self._watch(mode, info, t0, tail)
        results = []
        for r in self.callers:
            try:
                out, _ = r.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                Sipp.stop(r.proc)
                out = ""
            results.append(sipp._result(r.argv, r.proc.returncode, out or ""))
        self._wait_quiet(info)
        res = self.collect(mode, info, h0, t0, samples, events, results)
        lat = connect_latency.measure(tap.stop())
        res["connect_latency"] = lat.to_dict() if lat else None
        if tap.error:
            res["connect_latency_error"] = tap.error
        if mode == "controller" and self.notices:
            c = self.get(info, f"/api/v1/campaigns/{NOTICE_CAMPAIGN}")
            res["notices"] = {"state": c["state"], "counts": {k: v for k, v in c["counts"].items() if v}}
        res["members_at_start"] = members
        self._up.down()
        self.stack = None
        return res

    def _tap(self) -> connect_latency.AmiTap:
        """A second AMI session that records the queue events: app_queue's latency per call."""
        cfg = self._up.config()
        secret = str(load_secrets(self._up.secrets_path).get("ami_secret", ""))
        tap = connect_latency.AmiTap(cfg.asterisk.ami_port, cfg.asterisk.ami_username, secret).start()
        if tap.error:
            self.log(f"connect latency not measured: {tap.error}")
        return tap

    def _watch(self, mode: str, info: dict[str, Any], t0: float,
               tail: crisis.LogTail) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Once a second: queue sizes (peak waiting) and the controller's events, until the callers are done
        or the drain time is up (then the remaining callers are stopped)."""
        samples: list[dict[str, Any]] = []
        events: dict[str, Any] = {"tier": [], "offer": 0, "requested": 0, "answered": 0, "escalated": 0}
        end = t0 + self.span + self.opts.drain_s
        last_line = 0.0
        while any(r.proc.poll() is None for r in self.callers):
            if time.time() > end:
                self.log(f"[{mode}] drain time over: stopping the callers still on the line")
                for r in self.callers:
                    Sipp.stop(r.proc)
                break
            time.sleep(1.0)
            now = time.time() - t0
            try:
                qs = self.get(info, "/api/v1/queues")["queues"]
            except (OSError, ValueError):
                continue
            waiting = {q: v["waiting"] for q, v in qs.items()}
            samples.append({"t": round(now, 1), "waiting": waiting, "talking": sum(v["busy"] for v in qs.values())})
            for kind, m, _ in tail.events():
                at = f"[{mode} t={now * self.opts.factor / 60:5.1f} min]"
                if kind == "tier":
                    events["tier"].append((round(now, 1), m.group(1), m.group(2)))
                    if self.live:
                        what = "volunteers pulled in to" if m.group(1) == "open_tier" else "volunteers released from"
                        self.log(f"{at} {what} {m.group(2)}")
                elif kind == "offer":
                    events["offer"] += 1
                    if self.live:
                        self.log(f"{at} callback offered in {m.group(2)}: estimated wait {m.group(1)} s "
                                 f"(= {int(m.group(1)) * self.opts.factor / 60:.0f} min of the hour)")
                elif kind == "promise":
                    if self.live:
                        self.log(f"{at} promise heard in {m.group(1)}: within {m.group(2)} s (= "
                                 f"{int(m.group(2)) * self.opts.factor / 60:.0f} min of the hour), from the forecast")
                elif kind == "requested":
                    events["requested"] += 1
                    if self.live:
                        self.log(f"{at} callback {m.group(1)} booked (queue {m.group(2)}): the caller keeps "
                                 "their place")
                elif kind == "answered":
                    events["answered"] += 1
                    if self.live:
                        self.log(f"{at} callback {m.group(1)} made: the customer answered, into {m.group(2)} first")
                elif kind == "escalated":
                    events["escalated"] += 1
            if self.live and now - last_line >= 10:
                last_line = now
                tiers = []
                if mode == "controller":
                    try:
                        tiers = [q for q, t in self.get(info, "/api/v1/balance")["tiers"].items() if t["open"]]
                    except (OSError, ValueError):
                        pass
                line = "  ".join(f"{q} {w:3d}" for q, w in sorted(waiting.items()))
                self.log(f"[{mode} t={now * self.opts.factor / 60:5.1f} min] waiting: {line}; talking "
                         f"{samples[-1]['talking']}; volunteers "
                         f"{'in ' + ', '.join(sorted(tiers)) if tiers else 'standing by'}")
        return samples, events

    def _wait_quiet(self, info: dict[str, Any], timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                h = self.get(info, "/health")
                if h["agi"]["active_calls"] == 0 and h["records"]["active"] == 0:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        time.sleep(2.5)   # records are closed a moment after the hang-up

    def _callbacks(self, info: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The callbacks of the trace's callers (Redis, through the API): requested, made (the customer
        answered and reached an agent), kept (reached an agent within the promise, from the first call)."""
        numbers = {c.number for c in self.trace}
        started = {str(c.get("caller", "")): float(c.get("started_at") or c.get("joined_at") or 0)
                   for c in calls if c.get("kind") != "callback"}
        cbs = []
        misses = 0
        cb_id = 0
        while misses < 20:
            cb_id += 1
            try:
                rec = self.get(info, f"/api/v1/callbacks/{cb_id}")
            except urllib.error.HTTPError:
                misses += 1
                continue
            misses = 0
            cbs.append(rec.get("callback", rec))
        mine = [c for c in cbs if str(c.get("number", "")).lstrip("+") in numbers
                or str(c.get("caller", "")) in numbers]
        made, kept, waits = 0, 0, []
        for c in mine:
            if c.get("status") != "done":
                continue
            back = c.get("call_uid_back")
            answered = None
            if back:
                try:
                    rec = self.get(info, f"/api/v1/calls/{back}")
                    answered = crisis_report._f(rec.get("answered_at"))
                except urllib.error.HTTPError:
                    pass
            if answered is None:
                continue
            made += 1
            first = started.get(str(c.get("caller") or c.get("number")), 0.0) or float(c["requested_at"])
            waits.append(answered - first)
            if c.get("kept") in ("yes", "no"):       # the promise the caller heard, checked by the controller
                kept += c["kept"] == "yes"
            elif self.scaled.promise_s is not None:
                kept += answered - first <= self.scaled.promise_s
        return {"cb_requested": len(mine), "cb_made": made, "cb_kept": kept,
                "cb_pending_end": sum(1 for c in mine if c.get("status") == "pending"),
                "cb_wait_avg_s": round(sum(waits) / len(waits), 1) if waits else None,
                "cb_all": len(cbs)}

    def _queue_log(self) -> dict[str, int]:
        path = self._up.asterisk_state / "log" / "queue_log"
        counts: dict[str, int] = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split("|")
                if len(parts) > 4:
                    counts[parts[4]] = counts.get(parts[4], 0) + 1
        return counts

    def collect(self, mode: str, info: dict[str, Any], h0: dict[str, Any], t0: float, samples: list[dict[str, Any]],
                events: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        h1 = self.get(info, "/health")
        calls = [c for c in self.get(info, f"/api/v1/calls?count={min(10000, 3 * len(self.trace) + 200)}")["calls"]
                 if float(c.get("started_at") or c.get("joined_at") or 0) >= t0 - 5]
        res = crisis_report.summarise_records(calls, self.trace)
        ok, failed = sum(r.successful for r in results), sum(r.failed for r in results)
        res.update({"mode": mode, "sipp_successful": ok, "sipp_failed": failed,
                    "sipp_unfinished": len(self.trace) - ok - failed,   # still on the line when the drain ended
                    "agi_calls": h1["agi"]["calls"] - h0["agi"]["calls"],
                    "agi_failed": h1["agi"]["failed"] - h0["agi"]["failed"],
                    "peak_waiting": max((sum(s["waiting"].values()) for s in samples), default=0),
                    "queue_log": self._queue_log()})
        ql = res["queue_log"]
        res["queue_log_check"] = {"enterqueue": ql.get("ENTERQUEUE", 0), "connect": ql.get("CONNECT", 0),
                                  "abandon": ql.get("ABANDON", 0) + ql.get("EXITWITHTIMEOUT", 0)}
        balance = self.get(info, "/api/v1/balance")
        res["balance_actions"] = balance["actions"]
        res["tier_events"] = events["tier"]
        res["cb_offered"] = events["offer"]
        res["escalations_logged"] = events["escalated"]
        res.update(self._callbacks(info, calls) if mode == "controller" else
                   {"cb_requested": 0, "cb_made": 0, "cb_kept": 0, "cb_pending_end": 0, "cb_wait_avg_s": None})
        return res

    def stop(self) -> None:
        for r in self.callers:
            Sipp.stop(r.proc)
        for p in self.phones:
            Sipp.stop(p)
        if self.stack is not None:
            self.stack.down()
            self.stack = None
