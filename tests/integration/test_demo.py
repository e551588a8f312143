"""The README's first command, shortened: `ivr demo --classic` brings a stack up, replays callers, prints
the summary and the hourly report, and stops everything it started (the default crisis-hour demo is the
replay of benchmarks/crisis_hour.py: tests/integration/test_crisis_hour_smoke.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .harness import pick_port_base


def test_short_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    base = pick_port_base(start=30000, stop=40000)
    out = subprocess.run([sys.executable, "-m", "ivr", "demo", "--classic", "--workdir", str(workdir), "--duration", "8",
                          "--rate", "1", "--agents", "3", "--talk", "2", "--volunteers", "2", "--campaign", "4",
                          "--port-base", str(base)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in out.stdout
    summary = json.loads(out.stdout.split("summary: ", 1)[1].splitlines()[0])
    assert summary["calls"] >= 6 and summary["sipp_failed"] == 0 and summary["fallback"] == 0
    assert summary["answered"] >= 1 and summary["by_outcome"].get("self_service", 0) >= 1
    report = out.stdout.split("report (ivr report", 1)[1]
    assert "period" in report and "total" in report
    assert "by reason: " in out.stdout and "balancing loop: " in out.stdout
    # the notice campaign ran to the end on the SIPp customers' phones (refund, callback, opt-out, busy, no key)
    counts = summary["campaign"]
    assert sum(counts.values()) == 4 and counts.get("done", 0) >= 2 and counts.get("optout", 0) == 1, counts
    # everything it started is stopped
    status = subprocess.run([sys.executable, "-m", "ivr", "status", "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=60)
    state = json.loads(status.stdout)
    assert not any(state[p]["running"] for p in ("redis", "asterisk", "controller")), state
