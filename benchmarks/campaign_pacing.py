"""Outbound campaign pacing and a large campaign on the real stack, against SIPp customer phones.

One private stack (``ivr up``: Asterisk, Redis, controller) whose trunk points at a SIPp
UAS playing every customer's phone (``ivr.devtools.sipp.callee_scenario``: the numbers used here all
end in 0-3, so each phone answers at once and presses 1 after 1.5 s; the notice then creates
a refund request, reads its reference back and hangs up: about 8 s a call).

1. **Pacing**: for each target rate in ``--cps``, a campaign of ``cps * --seconds`` contacts
   (max 1 attempt, window all day, ``max_channels`` generous so only the pacing limits). The
   achieved rate is measured from the time each contact was dialled (``dialled_at``, written
   by the dialler as it sends the Originate): ``(n - 1) / (last - first)``, and per 10-second
   window (min and max), and compared with the target (ratio).
2. **Large campaign**: ``--contacts`` contacts (10,000 by default) at the highest rate; it
   must finish with every contact dialled exactly once: attempts per contact from Redis, and
   INVITEs per number as the SIPp phones saw them (their message log). Outcomes, duration,
   controller and Asterisk CPU and the controller's peak memory are reported.

    python benchmarks/campaign_pacing.py                    # 5, 10, 25 calls/s x 60 s, then 10,000 contacts
    python benchmarks/campaign_pacing.py --cps 10 --seconds 20 --contacts 200 --json   # a quick check

Only loopback is used; everything started is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.devtools.sipp import Sipp, free_port  # noqa: E402
from ivr.devtools.stack import Stack  # noqa: E402

CALLER_ID = "5550100"


def api(info: dict[str, Any], method: str, path: str, body: Any = None, raw: bytes | None = None,
        ctype: str = "application/json") -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(info["api"] + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {info['token']}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from None


def numbers(count: int, start: int = 0) -> list[str]:
    """Distinct valid US numbers (+1 202 2XX XXXX) whose last digit is 0-3 (the phone presses 1)."""
    out = []
    i = start
    while len(out) < count:
        exchange, line = 220 + i // 10_000, i % 10_000
        if line % 10 <= 3:
            out.append(f"+1202{exchange}{line:04d}")
        i += 1
    return out


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return 0.0


async def dial_times(url: str, prefix: str, cid: str, password: str = "") -> tuple[list[float], dict[int, int]]:
    """When each contact was dialled, and how many attempts each contact had (from Redis)."""
    import redis.asyncio as aioredis

    from ivr.store.keys import CampaignKeys
    r = aioredis.from_url(url, decode_responses=True, password=password or None)
    k = CampaignKeys(prefix, cid)
    try:
        total = int(await r.get(k.seq) or 0)
        keys = [k.contact(n) for n in range(1, total + 1)]
        times, attempts = [], {}
        for i in range(0, len(keys), 1000):
            async with r.pipeline(transaction=False) as p:
                for k in keys[i:i + 1000]:
                    p.hmget(k, "dialled_at", "attempts")
                for n, (at, att) in enumerate(await p.execute(), start=i + 1):
                    if at:
                        times.append(float(at))
                    attempts[n] = int(att or 0)
        return sorted(times), attempts
    finally:
        await r.aclose()


def run_campaign(info: dict[str, Any], cfg: Any, cid: str, cps: float, contacts: list[str], max_channels: int,
                 pids: dict[str, int | None]) -> dict[str, Any]:
    api(info, "POST", "/api/v1/campaigns", {
        "id": cid, "name": cid, "message": {"en": "notice-cancelled"}, "amd": False,
        "window": {"start": "00:00", "end": "23:59"}, "max_attempts": 1, "ring_timeout": 10,
        "pacing": {"cps": cps, "max_channels": max_channels, "max_transfers": 0},
        "allowed_prefixes": ["+1202"], "hourly_cap": 10_000})
    csv = "number,name,booking\n" + "".join(f"{n},Customer {i},{100000 + i}\n" for i, n in enumerate(contacts))
    report = api(info, "POST", f"/api/v1/campaigns/{cid}/contacts", raw=csv.encode(), ctype="text/csv")
    if report["imported"] != len(contacts):
        raise SystemExit(f"import: {report}")
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    peak = rss_mb(pids["controller"])
    t0 = time.time()
    api(info, "POST", f"/api/v1/campaigns/{cid}/start")
    deadline = t0 + len(contacts) / cps * 2 + 120
    while True:
        c = api(info, "GET", f"/api/v1/campaigns/{cid}")
        peak = max(peak, rss_mb(pids["controller"]))
        if c["state"] == "done" or time.time() > deadline:
            break
        time.sleep(1.0)
    wall = time.time() - t0
    cpu = {k: round((cpu_seconds(p) - cpu0[k]) / wall * 100, 1) for k, p in pids.items()}
    times, attempts = asyncio.run(dial_times(cfg.redis.url, cfg.redis.prefix, cid, cfg.redis.password))
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / span if span > 0 else 0.0
    windows = []
    if times:
        edge = times[0]
        while edge + 10 <= times[-1]:
            windows.append(sum(1 for t in times if edge <= t < edge + 10) / 10)
            edge += 10
    return {
        "campaign": cid, "target_cps": cps, "contacts": len(contacts), "state": c["state"],
        "dialled": len(times), "achieved_cps": round(achieved, 3), "ratio": round(achieved / cps, 4),
        "window_cps_min": min(windows) if windows else None, "window_cps_max": max(windows) if windows else None,
        "attempts_max": max(attempts.values()) if attempts else 0,
        "never_dialled": sum(1 for a in attempts.values() if a == 0),
        "outcomes": c.get("outcomes") or c.get("counts"), "wall_s": round(wall, 1), "cpu_pct": cpu,
        "controller_rss_peak_mb": round(peak, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cps", default="5,10,25", help="target rates for the pacing runs (comma-separated)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each pacing run")
    ap.add_argument("--contacts", type=int, default=10_000, help="size of the large campaign (0: skip it)")
    ap.add_argument("--max-channels", type=int, default=400)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--port-base", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.cps.split(",") if x.strip()]
    if not rates or any(r <= 0 for r in rates) or args.seconds <= 0 or args.contacts < 0:
        print("campaign_pacing: --cps, --seconds must be positive, --contacts >= 0", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-campaign-")).resolve()
    callee_port = free_port()
    stack = Stack(workdir)
    stack.init(port_base=args.port_base, extra={
        "asterisk": {"trunk_uri": f"sip:127.0.0.1:{callee_port}", "outbound_callerid": CALLER_ID},
        "log_level": "WARNING"})
    cfg = stack.config()
    sipp = Sipp(target_port=cfg.asterisk.sip_port, workdir=workdir / "sipp")
    phones = None
    results: dict[str, Any] = {"pacing": [], "large": None, "machine": os.uname().nodename,
                               "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    try:
        info = stack.up(timeout=60)
        phones = sipp.start_callees(callee_port, talk_ms=30_000)
        pids = {name: stack._read_pid(name) for name in ("controller", "asterisk")}
        used = 0
        for cps in rates:
            n = max(2, int(cps * args.seconds))
            res = run_campaign(info, cfg, f"pace-{cps:g}".replace(".", "p"), cps, numbers(n, used), args.max_channels, pids)
            used += n * 3
            results["pacing"].append(res)
            if not args.json:
                print(f"pacing {cps:g}/s: achieved {res['achieved_cps']}/s (ratio {res['ratio']}), 10 s windows "
                      f"{res['window_cps_min']}-{res['window_cps_max']}/s, {res['dialled']} dialled, "
                      f"max attempts {res['attempts_max']}, cpu {res['cpu_pct']}", flush=True)
        if args.contacts:
            cps = max(rates)
            before = sipp.invites_received(callee_port)
            nums = numbers(args.contacts, used)
            res = run_campaign(info, cfg, "large", cps, nums, args.max_channels, pids)
            after = sipp.invites_received(callee_port)
            per_number = [after.get(x.lstrip("+"), 0) - before.get(x.lstrip("+"), 0) for x in nums]
            res["invites_per_number_max"] = max(per_number)
            res["numbers_not_invited"] = sum(1 for v in per_number if v == 0)
            res["double_dials"] = sum(1 for v in per_number if v > 1)
            results["large"] = res
            if not args.json:
                print(f"large: {res['contacts']} contacts at {cps:g}/s: {res['state']} in {res['wall_s']} s, "
                      f"achieved {res['achieved_cps']}/s, double dials {res['double_dials']}, never dialled "
                      f"{res['never_dialled']}, not invited {res['numbers_not_invited']}, outcomes {res['outcomes']}, "
                      f"cpu {res['cpu_pct']}, controller RSS peak {res['controller_rss_peak_mb']} MB", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if phones is not None:
            sipp.stop(phones)
        stack.down()
    if args.json:
        print(json.dumps(results, indent=2))
    ok = all(r["dialled"] == r["contacts"] and r["attempts_max"] == 1 for r in results["pacing"])
    if results["large"]:
        ok = ok and results["large"]["double_dials"] == 0 and results["large"]["never_dialled"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
