"""benchmarks/crisis_hour.py at smoke size: the first 15 s of the compressed crisis hour through a static
Queue() line and through the controller's whole line, on two private stacks, with the same SIPp callers
and agent phones (patience and talk capped at 20 s); JSON out, figures checked against each other and against Asterisk's queue_log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ivr.app.config import PROJECT_ROOT

from .harness import pick_port_base, require_tools

SCRIPT = PROJECT_ROOT / "benchmarks" / "crisis_hour.py"


def test_crisis_hour_static_and_controller_on_the_real_stack(tmp_path: Path) -> None:
    require_tools()
    base = pick_port_base(start=42000, stop=56000)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", "--port-base", str(base),
                           "--workdir", str(tmp_path / "crisis")],
                          capture_output=True, text=True, timeout=420, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(proc.stdout)
    assert r["complete"] and set(r["runs"]) == {"static", "controller"}
    static, ctl = r["runs"]["static"], r["runs"]["controller"]
    n = r["callers"]
    assert n >= 10 and static["offered"] == ctl["offered"] == n

    # static: no AGI at all, every caller straight into a queue; the records agree with app_queue's queue_log
    assert static["agi_calls"] == 0 and static["self_service"] == 0 and static["cb_offered"] == 0
    assert static["records"] == static["queued"] == n, static["by_outcome"]
    assert static["answered"] + static["abandoned"] == n
    q = static["queue_log_check"]
    assert q["enterqueue"] == n and q["connect"] == static["answered"] and q["abandon"] == static["abandoned"], q
    assert static["members_at_start"] == r["agents"]          # every agent in the queues from the start
    assert set(static["balance_actions"]) <= {"add_member"}   # ... and nothing moved them
    assert static["sipp_failed"] == 0 and static["sipp_successful"] == n and static["sipp_unfinished"] == 0

    # controller: every caller through the menu (one AGI session each, plus the survey of the answered)
    assert ctl["agi_failed"] == 0 and ctl["fallback"] == 0 and ctl["sipp_failed"] == 0
    assert ctl["agi_calls"] >= n and ctl["records"] == n, ctl["by_outcome"]
    assert ctl["self_service"] > 0 and ctl["queued"] > 0 and ctl["answered"] > 0, ctl["by_outcome"]
    assert ctl["self_service"] + ctl["queued"] + ctl["by_outcome"].get("callback_requested", 0) <= n
    assert ctl["answered"] + ctl["abandoned"] <= ctl["queued"]
    assert ctl["queued"] < static["queued"]                   # self-service kept callers out of the queues
    assert ctl["cb_made"] <= ctl["cb_requested"] <= ctl["cb_offered"] and ctl["cb_kept"] <= ctl["cb_made"]
    for run in (static, ctl):
        assert run["asa_s"] is not None and run["asa_s"] >= 0
        assert 0 <= run["abandoned_pct"] <= 100 and run["peak_waiting"] >= 0

    # the simulator's prediction for the same hour, and the comparison
    assert r["simulator"]["static"]["offered"] > 0 and set(r["compare"]) == {"asa_s", "abandoned_pct"}
    for m in ("static", "controller"):   # both stacks are down again
        assert not list((tmp_path / "crisis" / m / "pids").glob("*.pid")), m
