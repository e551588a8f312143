"""Smoke test of benchmarks/agi_servers.py: a tiny run against all three FastAGI servers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "agi_servers.py"
SERVERS = ("ivr", "panoramisk", "pyst2")
CALLS = 40

pytest.importorskip("panoramisk.fast_agi")
pytest.importorskip("asterisk.agi")


def test_benchmark_tiny_run_all_servers() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--calls", str(CALLS), "--concurrency", "5",
         "--seconds", "20", "--warmup-calls", "5", "--call-timeout", "5", "--json"],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert set(out) >= {"config", "baseline", "results"}
    assert out["baseline"] == "ivr"
    assert list(out["results"]) == list(SERVERS)
    for name, res in out["results"].items():
        assert res["server"] == name
        assert res["calls_failed"] == 0, (name, res["failure_reasons"])
        assert res["warmup_failed"] == 0, name
        assert res["calls_ok"] == CALLS, name
        assert res["commands"] == CALLS * 10, name
        for key in ("calls_per_s", "commands_per_s", "turnaround_p50_ms",
                    "turnaround_p99_ms", "setup_p50_ms", "elapsed_s"):
            assert res[key] > 0, (name, key, res[key])
        assert res["turnaround_p99_ms"] >= res["turnaround_p50_ms"]
        ratios = res["ratio_to_ivr"]
        assert set(ratios) >= {"calls_per_s", "commands_per_s", "turnaround_p50_ms",
                               "turnaround_p99_ms"}
        assert all(v is not None and v > 0 for v in ratios.values()), (name, ratios)
    assert out["results"]["ivr"]["ratio_to_ivr"]["calls_per_s"] == pytest.approx(1.0)
