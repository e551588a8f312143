"""``ivr demo``: a time-compressed surge through the real stack, on loopback.

By default the demo replays the crisis hour (``run_crisis_demo``): the peak hour of the crisis-day
profile, ten times faster, through the controller's whole line (ivr/devtools/crisis.py, the same replay as
benchmarks/crisis_hour.py): a notice campaign just before the wave, callers walking the real menu,
self-service, queues growing, volunteers pulled in and released by the balancing loop, callbacks offered
and made; at the end the figures beside the simulator's prediction for a static app_queue line (or the
static replay on the stack too, ``--with-static``).

``--classic`` runs the older, smaller demo (``run_demo``):
Brings up Asterisk, Redis and the controller (``Stack``), starts SIPp agent
phones (experienced and novice core agents, and volunteers the balancing loop
brings in when the wait grows), replays SIPp callers who listen to the crisis
message, choose a language and a menu branch, wait in the queues and talk to an
agent (or give up), runs a small outbound notice campaign to SIPp customer
phones behind a loopback "carrier", then prints a summary from the call records,
the report by hour and by reason, and stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..app.config import PROJECT_ROOT
from .sipp import CallerScript, Sipp, free_port
from .stack import Stack, seed_refund as _seed_refund  # noqa: F401 (benchmarks/surge_load.py)

# Menu branches callers choose in the default menu, with their share of calls
# (refunds dominate a surge: see docs/operations.md).
BRANCHES: tuple[tuple[str, str, float], ...] = (
    ("refund-status", "1", 0.35),
    ("refund-request", "2", 0.30),
    ("rebooking", "3", 0.25),
    ("other", "4", 0.10),
)
LANGUAGES: tuple[tuple[str, str, float], ...] = (("en", "1", 0.5), ("fa", "2", 0.3), ("zh", "3", 0.2))
# what callers key in after the menu choice: a booking number for the refund branches
BRANCH_INPUT: dict[str, list[tuple[str, str | int]]] = {
    "1": [("pause", 900), ("dtmf", "314159")],     # STATUS_BOOKING: has a refund request (seeded)
    "2": [("pause", 900), ("dtmf", "271828")],
}


STATUS_BOOKING = "314159"


@dataclass(frozen=True, slots=True)
class CallerGroup:
    """One kind of caller of a surge (a language and a menu branch): how many, at what rate, doing what."""

    name: str
    calls: int
    rate: float
    script: CallerScript


def surge_mix(total: int, rate: float, patience: float) -> list[CallerGroup]:
    """The callers of a surge through the default menu (dialplans/main.yaml), split by language and branch:
    language first (any key interrupts it), # skips the crisis message, then the branch and its input."""
    groups = []
    for lang, lang_key, lshare in LANGUAGES:
        for branch, key, bshare in BRANCHES:
            n = int(round(total * lshare * bshare))
            if n == 0:
                continue
            steps: list[tuple[str, str | int]] = [("pause", 800), ("dtmf", lang_key), ("pause", 500), ("dtmf", "#"),
                                                  ("pause", 700), ("dtmf", key)]
            script = CallerScript(steps=steps + BRANCH_INPUT.get(key, []),
                                  end="wait_bye", patience_ms=int((patience + 60) * 1000))
            groups.append(CallerGroup(f"{lang}/{branch}", n, max(0.01, rate * lshare * bshare), script))
    return groups




@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path
    duration: float = 60.0          # seconds of arrivals
    rate: float = 1.0               # calls per second
    agents: int = 6                 # core agent phones (a third of them novices)
    volunteers: int = 3             # volunteers: in the queues only while the overflow tier is open
    campaign: int = 6               # contacts of the demo's notice campaign (0: none)
    talk: float = 8.0               # seconds an agent talks
    patience: float = 60.0          # seconds a caller waits before hanging up
    port_base: int | None = None
    keep_running: bool = False


def prompt_seconds(prompts_dir: Path, lang: str, name: str) -> float:
    path = prompts_dir / lang / f"{name}.wav"
    try:
        with wave.open(str(path)) as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, wave.Error):
        return 0.0


def _get(api: str, path: str, token: str) -> Any:
    req = urllib.request.Request(api + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def summarise(calls: Sequence[dict[str, Any]], servicelevel: float = 20.0) -> dict[str, Any]:
    """Offered/answered/abandoned, ASA and service level from call records."""
    queued = [c for c in calls if c.get("queue")]
    answered = [c for c in queued if c.get("outcome") == "answered"]
    waits = [float(c.get("wait") or 0) for c in answered]
    abandoned = [c for c in queued if c.get("outcome") in ("abandoned", "left_queue")]
    by_outcome: dict[str, int] = {}
    for c in calls:
        by_outcome[str(c.get("outcome"))] = by_outcome.get(str(c.get("outcome")), 0) + 1
    return {
        "calls": len(calls),
        "offered_to_queues": len(queued),
        "answered": len(answered),
        "abandoned": len(abandoned),
        "abandon_rate": round(len(abandoned) / len(queued), 3) if queued else 0.0,
        "asa_seconds": round(sum(waits) / len(waits), 1) if waits else None,
        "service_level": round(sum(1 for w in waits if w <= servicelevel) / len(answered), 3) if answered else None,
        "fallback": sum(1 for c in calls if c.get("fallback") == "1"),
        "by_outcome": by_outcome,
    }


DEMO_CAMPAIGN = "demo-notice"
# customers' phones behind the loopback carrier: the last digit picks what they do (ivr.devtools.sipp.callee_scenario):
# 1 refund, 4 callback, 5 opt out, 6 busy, 9 answer without a key, 2 refund
DEMO_CONTACT_ENDINGS = ("1", "4", "5", "6", "9", "2", "1", "4")


def _post(api: str, path: str, token: str, body: Any, content_type: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def _start_campaign(info: dict[str, Any], n: int, out: Any) -> None:
    """A small notice campaign ("your flight is cancelled: 1 refund, 2 call me back ...") to SIPp customers."""
    api, token = info["api"], info["token"]
    _post(api, "/api/v1/campaigns", token, {
        "id": DEMO_CAMPAIGN, "name": "Demo: cancelled flights", "message": {"en": "notice-cancelled"}, "amd": False,
        "window": {"start": "00:00", "end": "23:59"}, "max_attempts": 2, "ring_timeout": 8,
        "retry": {"busy": 20, "no_answer": 20, "failed": 20, "no_key": 20, "machine": 20, "unknown": 20},
        "pacing": {"cps": 1, "max_channels": 4, "max_transfers": 1}, "allowed_prefixes": ["+1"]})
    rows = ["number,name,booking"] + [f"+1202557{i:03d}{DEMO_CONTACT_ENDINGS[i % len(DEMO_CONTACT_ENDINGS)]},"
                                      f"Customer {i + 1},{600100 + i}" for i in range(n)]
    report = _post(api, f"/api/v1/campaigns/{DEMO_CAMPAIGN}/contacts", token, ("\n".join(rows) + "\n").encode(),
                   "text/csv")
    _post(api, f"/api/v1/campaigns/{DEMO_CAMPAIGN}/start", token, None)
    print(f"campaign {DEMO_CAMPAIGN}: {report['imported']} contacts ({report['rejected']} rejected), dialling at "
          "1 call/s", file=out, flush=True)


def _finish_campaign(info: dict[str, Any], out: Any, wait_s: float = 60.0) -> dict[str, int]:
    api, token = info["api"], info["token"]
    deadline = time.time() + wait_s
    while True:
        c = _get(api, f"/api/v1/campaigns/{DEMO_CAMPAIGN}", token)
        if c["state"] == "done" or time.time() > deadline:
            break
        time.sleep(2)
    counts = {k: v for k, v in c["counts"].items() if v}
    print(f"campaign {DEMO_CAMPAIGN} ({c['state']}): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=out, flush=True)
    return counts


def run_demo(opts: DemoOptions, out: Any = sys.stdout) -> dict[str, Any]:
    stack = Stack(opts.workdir)
    agent_ports = {str(2001 + i): free_port() for i in range(opts.agents + opts.volunteers)}
    novices = set(list(agent_ports)[: opts.agents // 3])
    volunteers = set(list(agent_ports)[opts.agents:])
    agents = [{"id": aid, "name": f"{'Novice' if aid in novices else 'Volunteer' if aid in volunteers else 'Agent'} {aid}",
               "skill": "novice" if aid in novices else "experienced",
               "team": "volunteers" if aid in volunteers else f"team-{int(aid) % 2 + 1}",
               "tier": "volunteer" if aid in volunteers else "core",
               "queues": ["refunds"] if aid in novices else ["support", "refunds", "rebooking"],
               "contact": f"sip:{aid}@127.0.0.1:{port}", "logged_in": True}
              for aid, port in agent_ports.items()]
    carrier_port = free_port()      # the "carrier": notices to customers ring SIPp phones here
    stack.init(port_base=opts.port_base, extra={
        "agents": agents, "dialplans_dir": str(PROJECT_ROOT / "dialplans"),
        "asterisk": {"trunk_uri": f"sip:127.0.0.1:{carrier_port}", "outbound_callerid": "5550100"},
        # a demo lasts a minute: the overflow tier opens at a 20 s estimated wait, not 45 s
        "balance": {"open_wait_s": 20, "close_wait_s": 5, "min_open_s": 20}})
    cfg = stack.config()
    sipp: Sipp | None = None
    phones = []
    callers = []
    interrupted = False

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        info = stack.up()
        _seed_refund(stack.config(), STATUS_BOOKING)
        started = time.time()
        print(f"stack up: SIP {info['sip']}, API {info['api']} (token in {stack.secrets_path})", file=out)
        print(f"dashboard: {info['api']}/  (Authorization: Bearer <token>)", file=out, flush=True)
        sipp = Sipp(target_port=cfg.asterisk.sip_port, workdir=opts.workdir / "sipp")
        for port in agent_ports.values():
            phones.append(sipp.start_agent(port, talk_ms=int(opts.talk * 1000), timeout_s=int(opts.duration + 600)))
        phones.append(sipp.start_callees(carrier_port, talk_ms=15_000, timeout_s=int(opts.duration + 600)))
        if opts.campaign:
            _start_campaign(info, opts.campaign, out)
        total = max(1, int(round(opts.rate * opts.duration)))
        rng = random.Random(7)
        for g in surge_mix(total, opts.rate, opts.patience):
            prefix = f"55{rng.randrange(10**5, 10**6)}"   # + SIPp's call number: one number per caller
            callers.append((g.name, g.calls, sipp.start_calls(
                g.script, extension=cfg.asterisk.inbound_extension, caller_prefix=prefix, calls=g.calls,
                rate=g.rate, timeout_s=int(opts.duration + opts.patience + 300))))
        print(f"replaying {total} calls over {opts.duration:.0f}s ({opts.rate:g}/s) to {opts.agents} agents "
              f"({len(novices)} novices)", file=out, flush=True)
        token = info["token"]
        while any(p.poll() is None for _, _, p in callers):
            time.sleep(5)
            snap = _get(info["api"], "/api/v1/queues", token)["queues"]
            line = "  ".join(f"{q}: {v['waiting']} waiting, {v['busy']} talking" for q, v in snap.items())
            tiers = [q for q, t in _get(info["api"], "/api/v1/balance", token)["tiers"].items() if t["open"]]
            line += f"  volunteers: {'in ' + ', '.join(sorted(tiers)) if tiers else 'standing by'}"
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=out, flush=True)
        results = {name: sipp.finish(p) for name, _, p in callers}
        time.sleep(2.5)  # records are closed a moment after the hang-up
        calls = [c for c in _get(info["api"], f"/api/v1/calls?count={min(10000, total * 2 + 10)}", token)["calls"]
                 if float(c.get("started_at") or c.get("joined_at") or 0) >= started]
        summary = summarise(calls)
        summary["sipp_failed"] = sum(r.failed for r in results.values())
        summary["sipp_successful"] = sum(r.successful for r in results.values())
        from ..reports.service import to_table
        rep = _get(info["api"], f"/api/v1/reports?since={started:.3f}&until={time.time() + 1:.3f}", token)
        if rep["rows"]:
            print("report (ivr report --config " + str(stack.config_path) + "):", file=out)
            print(to_table(rep["rows"] + [rep["total"]]), file=out, flush=True)
        reasons = _get(info["api"], f"/api/v1/reports/reasons?since={started:.3f}&until={time.time() + 1:.3f}",
                       token)["rows"]
        print("by reason: " + "; ".join(f"{r['reason']} {r['calls']} calls ({r['self_service']} self-service, "
                                        f"{r['answered']} answered, {r['abandoned']} abandoned)" for r in reasons),
              file=out, flush=True)
        balance = _get(info["api"], "/api/v1/balance", token)
        summary["balance_actions"] = balance["actions"]
        print("balancing loop: " + ", ".join(f"{k} {v}" for k, v in sorted(balance["actions"].items())), file=out)
        if opts.campaign:
            summary["campaign"] = _finish_campaign(info, out)
        print("summary: " + json.dumps(summary), file=out, flush=True)
        if opts.keep_running:
            print("stack left running; stop it with: ivr down --workdir " + str(opts.workdir), file=out)
        return summary
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping everything", file=out)
        return {}
    finally:
        signal.signal(signal.SIGTERM, old)
        if sipp is not None:
            for _, _, p in callers:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(5)
                    except Exception:
                        p.kill()
            for phone in phones:
                sipp.stop(phone)
        if not opts.keep_running or interrupted:
            stack.down()


@dataclass(frozen=True, slots=True)
class CrisisDemoOptions:
    workdir: Path
    profile: Path | None = None     # default: ivr.devtools.crisis.DEFAULT_PROFILE
    seed: int | None = None
    hour: int | None = None
    factor: float = 10.0
    press0: float = 0.2
    seconds: float | None = None    # only the first seconds (compressed) of the hour
    campaign: int | None = None     # notice contacts (default: the profile's notices.contacts, else 6)
    with_static: bool = False       # also replay the hour through a static line on the stack
    port_base: int | None = None


def run_crisis_demo(opts: CrisisDemoOptions, out: Any = sys.stdout) -> dict[str, Any]:
    """The compressed crisis hour through the controller's line, told as it happens; the figures at the
    end beside static (the simulator's prediction, or the static replay with ``with_static``)."""
    from . import crisis, crisis_report
    from .crisis_stack import Options, Replay

    profile = opts.profile or crisis.DEFAULT_PROFILE
    _, notices = crisis.load_profile_raw(profile)
    contacts = opts.campaign if opts.campaign is not None else int(notices.get("contacts", 0) or 6)
    ropts = Options(workdir=opts.workdir, profile=profile, seed=opts.seed, hour=opts.hour, factor=opts.factor,
                    press0=opts.press0, window_s=opts.seconds, notices=contacts, port_base=opts.port_base)
    replay = Replay(ropts, out=out, live=True)
    p = replay.profile
    vols = sum(1 for a in replay.roster if a.tier == "volunteer")
    over = p.callback_threshold_s   # a number of seconds, or "auto"/None: from the forecast (crisis-day.yaml)
    offered = (f"over {replay.scaled.callback_over:g} s of estimated wait ({over / 60:g} min of the hour)"
               if isinstance(over, (int, float)) else "over the wait the forecast sets (auto)")
    print(f"the crisis hour: {p.name}, {replay.hour:02d}:00-{replay.hour + 1:02d}:00 ({len(replay.trace)} callers), "
          f"{opts.factor:g}x faster ({replay.span:.0f} s); {len(replay.roster) - vols} core agents, {vols} volunteers "
          f"standing by ({sum(1 for a in replay.roster if a.skill == 'novice')} novices); a callback is offered "
          f"{offered}",
          file=out, flush=True)
    old = signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    result: dict[str, Any] = {"profile": p.name, "seed": replay.seed, "hour": replay.hour, "factor": opts.factor,
                              "callers": len(replay.trace), "span_s": round(replay.span, 1),
                              "agents": len(replay.roster), "runs": {},
                              "scaled": replay.scaled.describe(p), "seconds": opts.seconds,
                              "static_from": "stack" if opts.with_static else "simulator"}
    try:
        replay.start_phones()
        result["runs"]["controller"] = replay.run("controller")
        if opts.with_static:
            result["runs"]["static"] = replay.run("static")
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=out)
        return {}
    finally:
        signal.signal(signal.SIGTERM, old)
        replay.stop()
    crisis_report.predict(result, p, replay.seed, replay.hour, replay.trace)
    print("", file=out)
    print(crisis_report.format_table(result), file=out)
    if not opts.with_static:
        print("static (sim): the simulator's prediction for a static app_queue line with the same callers and "
              "agents (--with-static replays it on the stack too)", file=out)
    ctl = result["runs"]["controller"]
    summary = {"calls": ctl["records"], "offered": ctl["offered"], "answered": ctl["answered"],
               "abandoned": ctl["abandoned"], "asa_seconds": ctl["asa_s"], "self_service": ctl["self_service"],
               "fallback": ctl["fallback"], "callbacks": {k: ctl[k] for k in ("cb_offered", "cb_requested",
                                                                              "cb_made", "cb_kept")},
               "tier_changes": len(ctl["tier_events"]), "sipp_failed": ctl["sipp_failed"],
               "campaign": (ctl.get("notices") or {}).get("counts", {})}
    print("summary: " + json.dumps(summary), file=out, flush=True)
    return summary


def demo_main(args: Any) -> int:
    if not getattr(args, "classic", False):
        if args.keep_running:
            print("ivr demo: --keep-running applies to --classic only (the crisis hour stops its stacks at the end)",
                  file=sys.stderr)
            return 2
        copts = CrisisDemoOptions(
            workdir=Path(args.workdir).resolve(), profile=Path(args.profile) if args.profile else None,
            seed=args.seed, hour=args.hour, factor=args.factor, press0=args.press0, seconds=args.seconds,
            campaign=args.campaign, with_static=args.with_static, port_base=args.port_base)
        if copts.factor < 1 or not 0 <= copts.press0 <= 1 or (copts.campaign is not None and
                                                               not 0 <= copts.campaign <= 100):
            print("ivr demo: --factor must be >= 1, --press0 0-1, --campaign 0-100", file=sys.stderr)
            return 2
        summary = run_crisis_demo(copts)
        if not summary:
            return 130
        return 0 if summary["calls"] and summary["fallback"] == 0 else 1
    if args.campaign is None:
        args.campaign = 6
    opts = DemoOptions(workdir=Path(args.workdir).resolve(), duration=args.duration, rate=args.rate,
                       agents=args.agents, talk=args.talk, patience=args.patience, port_base=args.port_base,
                       keep_running=args.keep_running, volunteers=args.volunteers, campaign=args.campaign)
    if opts.rate <= 0 or opts.duration <= 0 or opts.agents < 1 or opts.volunteers < 0 or not 0 <= opts.campaign <= 100:
        print("ivr demo: --rate, --duration and --agents must be positive, --volunteers not negative, "
              "--campaign 0-100", file=sys.stderr)
        return 2
    summary = run_demo(opts)
    if not summary:
        return 130
    return 0 if summary["calls"] and summary["fallback"] == 0 else 1


__all__ = ["CrisisDemoOptions", "DemoOptions", "run_crisis_demo", "run_demo", "summarise", "demo_main"]
