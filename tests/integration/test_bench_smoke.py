"""benchmarks/ivr_call_rate.py at tiny settings: its own stack (real Asterisk, Redis, controller, SIPp),
5 calls/s for 4 s through the FastAGI menu and through the static dialplan, two rounds, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ivr.app.config import PROJECT_ROOT

from .harness import pick_port_base, require_tools

SCRIPT = PROJECT_ROOT / "benchmarks" / "ivr_call_rate.py"
STEP_KEYS = {"mode", "rate", "calls", "successful", "failed", "retransmissions", "unexpected", "dtmf_missed",
             "call_length_s", "max_concurrent", "cpu_pct", "controller_rss_mb", "agi_calls", "agi_failed",
             "records_written", "passed", "reasons", "sipp_limited"}


def test_call_rate_benchmark_runs_both_modes(tmp_path: Path) -> None:
    require_tools()
    base = pick_port_base(start=56000, stop=64000)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rates", "5", "--seconds", "4", "--rounds", "2", "--json",
         "--port-base", str(base), "--workdir", str(tmp_path / "bench")],
        capture_output=True, text=True, timeout=200, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert {"modes", "ratio", "ratio_text", "steps", "rates", "seconds", "notes", "complete"} <= set(result)
    assert result["complete"] is True
    assert result["rates"] == [5.0] and result["seconds"] == 4.0
    assert set(result["modes"]) == {"ivr", "static"}
    for mode, m in result["modes"].items():
        assert m["max_rate"] == 5.0, (mode, m)
        assert len(m["steps"]) == 1
        step = m["steps"][0]
        assert STEP_KEYS <= set(step), STEP_KEYS - set(step)
        assert step["passed"], (mode, step["reasons"])
        assert step["calls"] == 20 and step["successful"] == 20 and step["failed"] == 0
        assert step["dtmf_missed"] == 0
        assert {"controller", "asterisk", "redis", "sipp", "sipp_main_thread", "other"} <= set(step["cpu_pct"])
    ivr, static = result["modes"]["ivr"]["steps"][0], result["modes"]["static"]["steps"][0]
    assert ivr["agi_calls"] == 20 and ivr["agi_failed"] == 0 and ivr["records_written"] == 20
    assert static["agi_calls"] == 0 and static["records_written"] == 0
    assert ivr["controller_rss_mb"] > 0
    assert result["ratio"] == 1.0
    # the second round ran the same ladder on the same stack; each round has its ratio, and their median
    assert [r["round"] for r in result["rounds"]] == [1, 2] and [r["ratio"] for r in result["rounds"]] == [1.0, 1.0]
    assert result["ratio_median"] == 1.0
    assert sorted((s["round"], s["mode"]) for s in result["steps"]) == [(1, "ivr"), (1, "static"), (2, "ivr"),
                                                                         (2, "static")]
    # the stack is down again: nothing left running in the workdir
    pids = tmp_path / "bench" / "pids"
    assert not any(pids.glob("*.pid")), list(pids.glob("*.pid"))
