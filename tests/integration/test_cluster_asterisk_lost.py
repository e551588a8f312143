"""A node's Asterisk killed (SIGKILL) with callers waiting, in a stack of its own with the cluster on: the
controller says so in its heartbeat, and after ``cluster.node_ttl`` the leader (here the node itself) makes
the callers who were waiting there callbacks in their original join order, once each."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from ivr.devtools.sipp import CallerScript
from ivr.store.redis_store import Store

from .harness import start_test_stack, stop_test_stack, wait_for

CALLERS = ["447700900301", "447700900302", "447700900303"]


def _pending(ts: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = Store.from_config(ts.stack.config().redis)
        try:
            return await store.callbacks.pending(50)
        finally:
            await store.close()
    return asyncio.run(read())


def test_waiting_callers_of_a_node_whose_asterisk_died_become_callbacks_in_join_order(tmp_path: Path) -> None:
    ts = start_test_stack(tmp_path / "lost", extra={"cluster": {"enabled": True}})
    procs = []
    try:
        api = ts.api
        wait_for(lambda: api.request("GET", "/health")[1].get("cluster", {}).get("leadership", {}).get("leading"),
                 timeout=10, what="the node to lead")
        # three callers, one after the other, wait in rebooking (nobody is logged in there)
        for i, number in enumerate(CALLERS):
            procs.append(ts.sipp.start_calls(CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye",
                                                          patience_ms=60_000),
                                             extension=ts.extension, caller=number, calls=1, timeout_s=90))
            wait_for(lambda n=i + 1: ts.queue("rebooking").get("waiting") == n, timeout=15,
                     what=f"{i + 1} callers waiting")
            time.sleep(1.1)
        wait_for(lambda: api.request("GET", "/health")[1]["cluster"]["waiting"]["written"] >= 3, timeout=5,
                 what="the register written")
        os.kill(int((ts.stack.pids / "asterisk.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        (ts.stack.pids / "asterisk.pid").unlink(missing_ok=True)
        pending = wait_for(lambda: p if len(p := _pending(ts)) >= 3 else None, timeout=20,
                           what="3 callbacks of the lost node's callers")
        took = time.monotonic() - killed
        assert 5.0 <= took <= 12.0, took     # node_ttl (5 s) after AMI was lost, plus a sweep or two
        assert [p["number"] for p in pending] == CALLERS            # in the order they joined
        assert all(p["queue"] == "rebooking" and p["source"] == "node_lost" for p in pending), pending
        places = [float(p["place"]) for p in pending]
        assert places == sorted(places) and places[2] - places[0] >= 2.0
        time.sleep(2.5)                                              # more sweeps: nobody twice
        assert len(_pending(ts)) == 3
        cluster = api.request("GET", "/health")[1]["cluster"]
        me = [n for n in cluster["heartbeats"]["nodes"] if n["node"] == cluster["leadership"]["node"]]
        assert me and me[0]["lost"] == "asterisk" and me[0]["ami"] is False
        assert cluster["lost_nodes"]["callbacks"] == 3
        req = urllib.request.Request(f"{api.base}/metrics", headers={"Authorization": f"Bearer {api.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            scraped = resp.read().decode()
        assert 'ivr_node_lost_callbacks_total{result="callback"} 3.0' in scraped
    finally:
        for p in procs:   # callers run in the test's process group: ended one by one (Sipp.stop signals a group)
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        stop_test_stack(ts)
