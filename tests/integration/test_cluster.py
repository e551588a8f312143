"""The cluster on loopback, real processes: Kamailio in front of two nodes (Asterisk + controller each) sharing
one Redis set (primary, replica, three Sentinels), started with ``ivr up --nodes 2``; SIPp callers dial Kamailio's address.

* callers reach the IVR (FastAGI sessions) on both nodes;
* an agent's phone registered with Kamailio is rung by both nodes' queues but never gets two calls at once
  (Kamailio answers the second node 486 while the first call is up);
* Kamailio stopped and started again while calls are up: the calls go on (media never passed through it;
  their BYEs follow the Route set, which a fresh Kamailio relays statelessly) and new calls succeed;
* one node's Asterisk SIGKILLed under a steady stream of calls: Kamailio marks it down within the probe
  interval plus one transaction timeout, new calls are answered by the other node, and the INVITEs that fail
  in the gap stay within the stated bound (rate x (probe interval + fr_timer));
* ``ivr down`` leaves nothing running and nothing listening.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from ivr.app.config import PROJECT_ROOT
from ivr.asterisk.kamailio import FR_TIMER_MS, PING_INTERVAL
from ivr.devtools.cluster import Cluster, cluster_ports
from ivr.devtools.cluster_parts import register_phone
from ivr.devtools.sipp import Sipp, SippResult, free_port
from ivr.devtools.sipp_scenarios import CallerScript
from ivr.devtools.stack import _port_in_use, _pid_alive

from .harness import FIXTURES, SHORT_MENU_DID, cluster_port_base, require_tools, wait_for

AGENT = "1001"

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def ivr(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV, cwd=PROJECT_ROOT)


def answered(result: SippResult) -> int:
    """INVITEs answered with 200 OK (the scenario screen's first 200 line, the one after the INVITE)."""
    m = re.search(r"200 <-+\s+E-RTD1\s+(\d+)", result.stdout)
    assert m, f"no answer count in SIPp's screen:\n{result.stdout}"
    return int(m.group(1))


def agi_calls(api: str, token: str) -> int:
    """FastAGI sessions a node's controller has served: callers who reached its IVR."""
    req = urllib.request.Request(api + "/health", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read())["agi"]["calls"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    require_tools()
    workdir = tmp_path_factory.mktemp("cluster")
    base = _cluster_base()
    dialplans = workdir / "dialplans"
    dialplans.mkdir()
    shutil.copy(PROJECT_ROOT / "dialplans" / "main.yaml", dialplans / "main.yaml")
    shutil.copy(FIXTURES / "dialplans" / "short.yaml", dialplans / "short.yaml")
    # the nodes' config beyond the defaults (ivr up keeps it): one agent in support on both nodes, the short menu
    Cluster(workdir).init(nodes=2, port_base=base, extra={
        "dialplans_dir": str(dialplans), "dids": {SHORT_MENU_DID: "short"},
        "agents": [{"id": AGENT, "name": "Agent One", "queues": ["support"], "logged_in": True}]})
    out = ivr("up", "--workdir", str(workdir), "--nodes", "2", "--port-base", str(base), "--timeout", "120")
    assert out.returncode == 0, f"ivr up --nodes 2 failed:\n{out.stderr[-4000:]}"
    info = json.loads(out.stdout.strip().splitlines()[-1])
    c = Cluster(workdir)
    try:
        yield c, info
    finally:
        down = ivr("down", "--workdir", str(workdir))
        assert down.returncode == 0, f"ivr down failed:\n{down.stderr[-4000:]}"


def _cluster_base() -> int:
    return cluster_port_base(2)


def caller(pause_ms: int) -> CallerScript:
    return CallerScript(steps=[("pause", pause_ms)], end="hangup", via_proxy=True)


def test_up_prints_the_cluster_and_status_is_healthy(cluster: tuple[Cluster, dict[str, Any]]) -> None:
    c, info = cluster
    assert info["sip"] == c.sip() and info["token"] and info["inbound_extension"] == "500"
    assert [n["name"] for n in info["nodes"]] == ["node1", "node2"]
    assert info["api"] == info["nodes"][0]["api"] and info["nodes"][0]["api"] != info["nodes"][1]["api"]
    assert all(_pid_alive(n["asterisk_pid"]) for n in info["nodes"])
    assert "leader" in info
    status = ivr("status", "--workdir", str(c.workdir))
    assert status.returncode == 0, status.stdout[-3000:]
    st = json.loads(status.stdout)
    assert set(st["kamailio"]["nodes"].values()) == {"AP"} and len(st["kamailio"]["nodes"]) == 2
    # the Redis set: every part runs, the Sentinels name the primary, the replica follows it
    redis = st["redis"]
    assert redis["answers"] and redis["primary_part"] == "primary" and len(redis["sentinels"]) == 3, redis
    assert all(p["running"] and p["pid"] for p in redis["parts"].values()), redis
    assert redis["parts"]["replica"]["role"] == "replica" and redis["parts"]["replica"]["link"] == "up", redis
    assert {redis["parts"][f"sentinel{i}"]["primary"] for i in (1, 2, 3)} == {redis["parts"]["primary"]["port"]}
    cfg = c.node(1).config().redis     # every node reaches it through the Sentinels
    assert list(cfg.sentinels) == redis["sentinels"] and cfg.master_name == redis["master_name"]


def test_callers_reach_the_ivr_on_both_nodes(cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path) -> None:
    c, info = cluster
    sipp = Sipp(target_port=int(info["sip"].rsplit(":", 1)[1]), workdir=tmp_path / "sipp")
    before = [agi_calls(n["api"], info["token"]) for n in info["nodes"]]
    result = sipp.call(caller(2500), extension=info["inbound_extension"], calls=8, rate=4, timeout_s=60)
    assert result.ok, f"{result.successful} ok, {result.failed} failed:\n{result.errors}"
    reached = wait_for(lambda: (lambda now: now if sum(now) - sum(before) >= 8 else None)(
        [agi_calls(n["api"], info["token"]) for n in info["nodes"]]), timeout=15, what="8 IVR sessions")
    per_node = [a - b for a, b in zip(reached, before)]
    assert sum(per_node) == 8 and min(per_node) >= 3, f"calls per node: {per_node} (round-robin: 4 and 4)"


def test_an_agent_is_never_rung_by_two_nodes_at_once(cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path) -> None:
    c, info = cluster
    kam = c.kamailio()
    sipp = Sipp(target_port=kam.port, workdir=tmp_path / "sipp")
    port = free_port()
    register_phone(kam.host, kam.port, AGENT, port)
    phone = sipp.start_agent(port, talk_ms=60_000, trace_msg=True, via_proxy=True)
    log = kam.root / "logs" / "kamailio.log"
    busy_before = log.read_text(errors="replace").count(f"agent {AGENT} is on a call: 486")
    before = [agi_calls(n["api"], info["token"]) for n in info["nodes"]]
    try:
        # two callers, one per node (round-robin), both press 1 for support, where the one agent serves
        script = CallerScript(steps=[("pause", 1200), ("dtmf", "1"), ("pause", 9000)], end="hangup", via_proxy=True)
        proc = sipp.start_calls(script, extension=SHORT_MENU_DID, calls=2, rate=10, timeout_s=60)
        try:
            wait_for(lambda: sipp.invites_received(port, "agent").get(AGENT, 0) >= 1, timeout=20,
                     what="the agent's phone to be rung")
            time.sleep(4)   # the other node's queue keeps trying the agent (retry 1 s) meanwhile
            during = sipp.invites_received(port, "agent").get(AGENT, 0)
        finally:
            result = sipp.finish(proc, timeout=60)
    finally:
        Sipp.stop(phone)
    per_node = [agi_calls(n["api"], info["token"]) - b for n, b in zip(info["nodes"], before)]
    busy = log.read_text(errors="replace").count(f"agent {AGENT} is on a call: 486") - busy_before
    assert per_node == [1, 1], f"callers per node: {per_node}"
    assert during == 1, f"the agent's phone got {during} INVITEs during one call"
    assert busy >= 1, "Kamailio never answered the other node 486 Busy Here"
    assert result.ok, f"{result.successful} ok, {result.failed} failed:\n{result.errors}"


def test_an_agent_phone_dialling_in_is_challenged_and_served_by_one_node(cluster: tuple[Cluster, dict[str, Any]],
                                                                         tmp_path: Path) -> None:
    """The node that challenges the phone's INVITE (digest) must get the retry with the credentials: Kamailio
    keeps the call on that node. Two calls: round-robin puts one on each node, both succeed."""
    c, info = cluster
    password = c.secrets()[f"agent:{AGENT}"]
    nodes_pjsip = [(c.node(i).asterisk_etc / "pjsip.conf").read_text() for i in range(2)]
    assert all(f"password = {password}" in text for text in nodes_pjsip)   # the same account on every node
    sipp = Sipp(target_port=c.kamailio().port, workdir=tmp_path / "sipp")
    before = [agi_calls(n["api"], info["token"]) for n in info["nodes"]]
    for _ in range(2):   # *81 (phone login): no PIN is set, so the IVR says so and hangs up
        result = sipp.dial_as(AGENT, password, "*81", digits="1234#", via_proxy=True)
        assert result.ok, f"{result.successful} ok, {result.failed} failed:\n{result.errors}"
    per_node = [agi_calls(n["api"], info["token"]) - b for n, b in zip(info["nodes"], before)]
    assert per_node == [1, 1], f"phone calls per node: {per_node}"


def test_kamailio_restart_keeps_the_calls_up_and_new_calls_succeed(cluster: tuple[Cluster, dict[str, Any]],
                                                                   tmp_path: Path) -> None:
    c, info = cluster
    sipp = Sipp(target_port=int(info["sip"].rsplit(":", 1)[1]), workdir=tmp_path / "sipp")
    proc = sipp.start_calls(caller(9000), extension=info["inbound_extension"], calls=6, rate=3, timeout_s=60)
    try:
        wait_for(lambda: sum(_active_calls(c, i) for i in range(2)) >= 6, timeout=15, what="6 calls up")
        c.stop_kamailio()
        down_at = time.monotonic()
        time.sleep(1.0)
        up_on_nodes = sum(_active_calls(c, i) for i in range(2))   # Kamailio is not on the media path
        c.start_kamailio()
        restart_s = time.monotonic() - down_at
    finally:
        result = sipp.finish(proc, timeout=90)
    assert up_on_nodes == 6, f"{up_on_nodes} of 6 calls still up on the nodes while Kamailio was down"
    assert result.ok and result.successful == 6, \
        f"calls across the restart ({restart_s:.1f} s): {result.successful} ok, {result.failed} failed:\n{result.errors}"
    after = sipp.call(caller(1000), extension=info["inbound_extension"], calls=4, rate=4, timeout_s=60)
    assert after.ok and after.successful == 4, f"new calls after the restart:\n{after.errors}"


def _active_calls(c: Cluster, i: int) -> int:
    res = c.node(i)._asterisk_cli("core show channels count")
    m = re.search(r"(\d+) (?:of \d+ max )?active call", res.stdout)
    return int(m.group(1)) if m else 0


def test_a_dead_node_is_skipped_within_the_probe_interval(cluster: tuple[Cluster, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    c, info = cluster
    rate, calls, talk_ms = 2.0, 40, 1500
    sipp = Sipp(target_port=int(info["sip"].rsplit(":", 1)[1]), workdir=tmp_path / "sipp")
    kam = c.kamailio()
    node2 = f"sip:{info['nodes'][1]['sip']}"
    proc = sipp.start_calls(caller(talk_ms), extension=info["inbound_extension"], calls=calls, rate=rate,
                            timeout_s=90)
    try:
        time.sleep(6)
        processed_at_kill = c.calls_processed(0)
        c.kill_node_asterisk(1)
        killed = time.monotonic()
        wait_for(lambda: kam.destinations().get(node2, "").startswith("I"), timeout=15, interval=0.05,
                 what="Kamailio to mark node2 inactive")
        marked_s = time.monotonic() - killed
    finally:
        result = sipp.finish(proc, timeout=150)
    # the calls that were up on node2 died with it (SIP cannot move a call); the INVITEs after the kill went
    # to node1, at worst after one fr_timer on node2
    failed_invites = calls - answered(result)
    bound = math.ceil(rate * (PING_INTERVAL + FR_TIMER_MS / 1000))
    print(f"\nnode2 marked down {marked_s:.2f} s after SIGKILL; failed INVITEs {failed_invites} "
          f"(bound {bound}); calls lost on node2 {result.failed - failed_invites}")
    assert marked_s <= PING_INTERVAL + FR_TIMER_MS / 1000 + 1.0, f"marked down only after {marked_s:.1f} s"
    assert failed_invites <= bound, f"{failed_invites} INVITEs failed in the gap (bound {bound}):\n{result.errors}"
    after_kill = c.calls_processed(0) - processed_at_kill
    assert after_kill >= calls - int(6 * rate) - 2, f"node1 took only {after_kill} calls after the kill"
    more = sipp.call(caller(500), extension=info["inbound_extension"], calls=4, rate=4, timeout_s=60)
    assert more.ok and more.successful == 4, more.errors
    # node2 back: Kamailio's probes mark it active again and it takes calls
    c.restart_node_asterisk(1)
    wait_for(lambda: kam.destinations().get(node2, "").startswith("A"), timeout=15,
             what="Kamailio to mark node2 active again")
    before = c.calls_processed(1)
    again = sipp.call(caller(500), extension=info["inbound_extension"], calls=4, rate=4, timeout_s=60)
    assert again.ok and c.calls_processed(1) - before >= 1, again.errors


def test_down_leaves_nothing_running(tmp_path: Path) -> None:
    require_tools()
    base = _cluster_base()
    c = Cluster(tmp_path / "c")
    c.init(nodes=2, port_base=base)
    info = c.up(timeout=120)
    pids = [p for p in c._pids().values() if p]
    assert len(pids) == 10, c._pids()   # the Redis set (5), Kamailio, and Asterisk + controller on each node
    assert info["redis_set"]["primary_part"] == "primary" and info["redis_set"]["answers"], info["redis_set"]
    assert {n: p["pid"] for n, p in info["redis_set"]["parts"].items()} == \
        {n.split(".", 1)[1]: p for n, p in c._pids().items() if n.startswith("redis.")}
    stopped = c.down()
    assert "kamailio" in stopped and {f"redis.{n}" for n in info["redis_set"]["parts"]} <= set(stopped), stopped
    assert not any(_pid_alive(p) for p in pids)
    ports = cluster_ports(base, 2)
    assert not _port_in_use("127.0.0.1", ports["kamailio"], udp=True)
    for n in ports["nodes"]:
        assert not _port_in_use("127.0.0.1", n["sip"], udp=True)
        assert not any(_port_in_use("127.0.0.1", n[k]) for k in ("ami", "agi", "api"))
    assert not any(_port_in_use("127.0.0.1", p) for p in ports["redis_set"]) and info["nodes"][1]["asterisk_pid"] in pids
