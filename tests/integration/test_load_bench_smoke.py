"""benchmarks/surge_load.py at tiny settings, both modes, each on its own stack: callers through the default
menu to the queues and SIPp agents (rate), and a crowd on hold (hold); JSON out, figures checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ivr.app.config import PROJECT_ROOT

from .harness import pick_port_base, require_tools

SCRIPT = PROJECT_ROOT / "benchmarks" / "surge_load.py"
KEYS = {"mode", "calls", "successful", "failed", "agi_calls", "agi_failed", "fallback", "records", "outcomes",
        "cpu_pct", "ms_per_call", "cpu_pct_at_rate", "controller_rss_mb", "tasks", "open_files", "peak_waiting",
        "samples", "passed", "reasons", "complete"}


def run(tmp_path: Path, *args: str) -> dict:
    require_tools()
    base = pick_port_base(start=42000, stop=58000)   # several candidates: the last stack's ports may be in TIME_WAIT
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--json", "--sample", "2", "--port-base", str(base),
                           "--workdir", str(tmp_path / "load")],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert KEYS <= set(result), KEYS - set(result)
    assert result["passed"] and result["complete"], result["reasons"]
    assert not any((tmp_path / "load" / "pids").glob("*.pid")), "the stack must be down again"
    return result


def test_rate_mode_runs_callers_through_the_menu_to_agents(tmp_path: Path) -> None:
    r = run(tmp_path, "--mode", "rate", "--rate", "2", "--seconds", "8")
    assert r["calls"] == r["successful"] == r["records"] and r["failed"] == 0 and r["calls"] >= 14
    assert r["agi_failed"] == 0 and r["fallback"] == 0
    assert r["outcomes"].get("self_service", 0) > 0 and r["outcomes"].get("answered", 0) > 0, r["outcomes"]
    assert r["cpu_pct_at_rate"]["controller"] > 0 and r["controller_rss_mb"]["peak"] > 0
    assert r["tasks"]["idle_after"] == r["tasks"]["idle_before"]


def test_hold_mode_keeps_a_crowd_waiting_while_agents_answer(tmp_path: Path) -> None:
    r = run(tmp_path, "--mode", "hold", "--callers", "12", "--arrival", "6", "--seconds", "15", "--agents", "2",
            "--talk", "5")
    assert r["calls"] == r["successful"] == r["records"] == 12 and r["failed"] == 0
    assert r["peak_waiting"] >= 8, r["peak_waiting"]
    # two agents answer a few of them in 15 s; the others leave the queue when their 15 s are up (app_queue
    # counts a timeout as abandoned)
    assert r["outcomes"].get("answered", 0) >= 2 and r["outcomes"].get("abandoned", 0) >= 3, r["outcomes"]
