"""Smoke test of benchmarks/decide_timing.py: a tiny run prints a median."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decide_timing.py"
TINY = ["--waiting", "30", "--agents", "20", "--callbacks", "5", "--runs", "20", "--warmup", "2"]


def test_tiny_run_prints_a_median() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), *TINY], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"median (\d+\.\d+) ms\s+p99 (\d+\.\d+) ms", proc.stdout)
    assert m, proc.stdout
    assert 0 < float(m.group(1)) <= float(m.group(2))


def test_tiny_run_json() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), *TINY, "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["waiting"] == 30 and res["agents"] == 20 and res["queues"] == 5 and res["runs"] == 20
    assert 0 < res["median_ms"] <= res["p99_ms"]
