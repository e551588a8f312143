"""``ivr demo``: a time-compressed surge through the real stack, on loopback.

Brings up Asterisk, Redis and the controller (``Stack``), starts SIPp agent
phones (experienced and novice), replays SIPp callers who listen to the crisis
message, choose a language and a menu branch, wait in the queues and talk to an
agent (or give up), then prints a summary from the call records and stops
everything it started, also on Ctrl-C.
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

from .config import PROJECT_ROOT
from .sipp import CallerScript, Sipp, free_port
from .stack import Stack

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


def _seed_refund(cfg: Any, booking: str) -> None:
    """A refund request for the booking the status callers ask about, so they hear a status and hang up."""
    import asyncio

    from .store.redis_store import Store

    async def seed() -> None:
        store = Store.from_url(cfg.redis.url, cfg.redis.prefix)
        try:
            if not await store.refunds.by_booking(booking):
                await store.refunds.create(booking, source="demo")
        finally:
            await store.close()
    asyncio.run(seed())


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path
    duration: float = 60.0          # seconds of arrivals
    rate: float = 1.0               # calls per second
    agents: int = 6                 # agent phones (a third of them novices)
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


def run_demo(opts: DemoOptions, out: Any = sys.stdout) -> dict[str, Any]:
    stack = Stack(opts.workdir)
    agent_ports = {str(2001 + i): free_port() for i in range(opts.agents)}
    novices = set(list(agent_ports)[: opts.agents // 3])
    agents = [{"id": aid, "name": f"{'Novice' if aid in novices else 'Agent'} {aid}",
               "skill": "novice" if aid in novices else "experienced",
               "team": f"team-{int(aid) % 2 + 1}",
               "queues": ["refunds"] if aid in novices else ["support", "refunds", "rebooking"],
               "contact": f"sip:{aid}@127.0.0.1:{port}", "logged_in": True}
              for aid, port in agent_ports.items()]
    stack.init(port_base=opts.port_base, extra={"agents": agents,
                                                "dialplans_dir": str(PROJECT_ROOT / "dialplans")})
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
        for aid, port in agent_ports.items():
            phones.append(sipp.start_agent(port, talk_ms=int(opts.talk * 1000), timeout_s=int(opts.duration + 600)))
        total = max(1, int(round(opts.rate * opts.duration)))
        rng = random.Random(7)
        for lang, lang_key, lshare in LANGUAGES:
            for branch, key, bshare in BRANCHES:
                n = int(round(total * lshare * bshare))
                if n == 0:
                    continue
                # the default menu: language first (any key interrupts it), # skips the crisis message
                script = CallerScript(
                    steps=[("pause", 800), ("dtmf", lang_key), ("pause", 500), ("dtmf", "#"),
                           ("pause", 700), ("dtmf", key)] + BRANCH_INPUT.get(key, []),
                    end="wait_bye", patience_ms=int((opts.patience + 60) * 1000))
                prefix = f"55{rng.randrange(10**5, 10**6)}"   # + SIPp's call number: one number per caller
                rate = max(0.01, opts.rate * lshare * bshare)
                callers.append((f"{lang}/{branch}", n, sipp.start_calls(
                    script, extension=cfg.asterisk.inbound_extension, caller_prefix=prefix, calls=n, rate=rate,
                    timeout_s=int(opts.duration + opts.patience + 300))))
        print(f"replaying {total} calls over {opts.duration:.0f}s ({opts.rate:g}/s) to {opts.agents} agents "
              f"({len(novices)} novices)", file=out, flush=True)
        token = info["token"]
        while any(p.poll() is None for _, _, p in callers):
            time.sleep(5)
            snap = _get(info["api"], "/api/v1/queues", token)["queues"]
            line = "  ".join(f"{q}: {v['waiting']} waiting, {v['busy']} talking" for q, v in snap.items())
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=out, flush=True)
        results = {name: sipp.finish(p) for name, _, p in callers}
        time.sleep(2.5)  # records are closed a moment after the hang-up
        calls = [c for c in _get(info["api"], f"/api/v1/calls?count={min(10000, total * 2 + 10)}", token)["calls"]
                 if float(c.get("started_at") or c.get("joined_at") or 0) >= started]
        summary = summarise(calls)
        summary["sipp_failed"] = sum(r.failed for r in results.values())
        summary["sipp_successful"] = sum(r.successful for r in results.values())
        print("summary: " + json.dumps(summary), file=out, flush=True)
        from .reports import to_table
        rep = _get(info["api"], f"/api/v1/reports?since={started:.3f}&until={time.time() + 1:.3f}", token)
        if rep["rows"]:
            print("report (ivr report --config " + str(stack.config_path) + "):", file=out)
            print(to_table(rep["rows"] + [rep["total"]]), file=out, flush=True)
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


def demo_main(args: Any) -> int:
    opts = DemoOptions(workdir=Path(args.workdir).resolve(), duration=args.duration, rate=args.rate,
                       agents=args.agents, talk=args.talk, patience=args.patience, port_base=args.port_base,
                       keep_running=args.keep_running)
    if opts.rate <= 0 or opts.duration <= 0 or opts.agents < 1:
        print("ivr demo: --rate, --duration and --agents must be positive", file=sys.stderr)
        return 2
    summary = run_demo(opts)
    if not summary:
        return 130
    return 0 if summary["calls"] and summary["fallback"] == 0 else 1


__all__ = ["DemoOptions", "run_demo", "summarise", "demo_main"]
