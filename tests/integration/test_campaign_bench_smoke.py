"""benchmarks/campaign_pacing.py at tiny settings: its own stack and SIPp customer phones, one pacing run
and a small campaign, JSON out; every contact dialled exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ivr.app.config import PROJECT_ROOT

from .harness import pick_port_base, require_tools

SCRIPT = PROJECT_ROOT / "benchmarks" / "campaign_pacing.py"


def test_campaign_benchmark_runs(tmp_path: Path) -> None:
    require_tools()
    base = pick_port_base(start=30000, stop=40000)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cps", "8", "--seconds", "5", "--contacts", "40",
                           "--json", "--port-base", str(base), "--workdir", str(tmp_path / "bench")],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    (pace,) = result["pacing"]
    assert pace["target_cps"] == 8 and pace["dialled"] == pace["contacts"] == 40
    assert pace["attempts_max"] == 1 and pace["state"] == "done"
    assert 0.8 <= pace["ratio"] <= 1.2, pace
    large = result["large"]
    assert large["contacts"] == 40 and large["double_dials"] == 0 and large["never_dialled"] == 0
    assert large["numbers_not_invited"] == 0 and large["outcomes"]["done"] == 40
