"""benchmarks/cluster_rate.py --quick: its own single stack and its own cluster (Kamailio + two nodes), 10 calls/s
for 4 s into each, two rounds alternating which goes first, JSON out; both rates printed and no failed call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.cluster_rate import busy_ports, layout
from ivr.app.config import PROJECT_ROOT
from ivr.devtools.stack import _port_in_use

from .harness import require_tools, worker_port_bases

SCRIPT = PROJECT_ROOT / "benchmarks" / "cluster_rate.py"


def test_cluster_rate_benchmark_measures_both_setups(tmp_path: Path) -> None:
    require_tools()
    first, stop = worker_port_bases() or (40000, 58000)
    base = next((b for b in range(first, stop, 2000)
                 if layout(b, 250)["node_rtp"][1][1] < stop + 2000 and not busy_ports(layout(b, 250))), None)
    assert base is not None, f"no free port range for a stack and a cluster between {first} and {stop}"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--port-base", str(base),
                           "--workdir", str(tmp_path / "bench")],
                          capture_output=True, text=True, timeout=420, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert result["complete"] is True and result["failed_calls"] == 0
    assert result["rates"] == [10.0] and result["seconds"] == 4.0
    # both figures, in each round (single first, then cluster first), and their ratio
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        assert r["best"] == {"single": 10.0, "cluster": 10.0}, result["rounds"]
        assert r["ratio"] == 1.0
    assert result["single_rate_median"] == 10.0 and result["cluster_rate_median"] == 10.0
    assert [(s["round"], s["setup"]) for s in result["steps"]] == [
        (1, "single"), (1, "cluster"), (2, "cluster"), (2, "single")]
    for step in result["steps"]:
        assert step["passed"], (step["setup"], step["reasons"])
        assert step["calls"] == step["successful"] == step["agi_calls"] == step["records_written"] == 40
        assert step["failed"] == 0 and step["agi_failed"] == 0 and step["dtmf_missed"] == 0
    # the cluster's calls went through Kamailio to both nodes (round-robin), and each part's CPU was read
    for step in (s for s in result["steps"] if s["setup"] == "cluster"):
        nodes = step["ms_per_call"]["nodes"]
        assert set(nodes) == {"node1", "node2"} and min(n["calls"] for n in nodes.values()) >= 15, nodes
        assert step["ms_per_call"]["kamailio"] is not None and step["ms_per_call"]["kamailio"] > 0
        assert all(n["asterisk"] is not None and n["controller"] is not None for n in nodes.values())
    cpu = result["cpu_ms_per_call"]
    assert cpu["single"]["asterisk"] and cpu["cluster"]["kamailio"] and cpu["cluster"]["node1"]["node"]
    assert result["projection"]["node_ceiling_cps"] > 0 and result["projection"]["nodes_per_kamailio_core"] > 0
    # both set-ups are down again: nothing left listening
    lay = layout(base, 250)
    assert not _port_in_use("127.0.0.1", lay["cluster"]["kamailio"], udp=True)
    assert not _port_in_use("127.0.0.1", lay["single"]["sip"], udp=True)
    assert not busy_ports(lay)
