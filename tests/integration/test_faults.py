"""Asterisk restarted mid-surge (its own stack: the session stack is left alone): the controller
reconnects, rebuilds its model, puts the agents back in their queues, writes the records of the calls
the crash cut off, takes new calls end to end, and leaks no task."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ivr.sipp import CallerScript

from .harness import start_test_stack, stop_test_stack, wait_for


def test_asterisk_restart_mid_surge(tmp_path: Path) -> None:
    ts = start_test_stack(tmp_path / "faults")
    try:
        api = ts.api

        def health() -> dict:
            return api.request("GET", "/health")[1]   # 503 while degraded: the body says why
        wait_for(lambda: any(m["interface"] == "PJSIP/1001" for m in ts.queue("support").get("members", [])),
                 timeout=15, what="agent 1001 in support")
        # settle, then count the controller's asyncio tasks
        time.sleep(2)
        before = health()
        assert before["ami"]["connected"] and before["records"]["active"] == 0

        # callers waiting in rebooking (nobody logged in there) when Asterisk dies
        waiting = ts.sipp.start_calls(CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye",
                                                   patience_ms=60_000),
                                      extension=ts.extension, caller="5559001", calls=3, rate=5, timeout_s=90)
        wait_for(lambda: ts.queue("rebooking").get("waiting") == 3, timeout=15, what="3 callers waiting")
        assert health()["records"]["active"] == 3
        os.kill(int((ts.stack.pids / "asterisk.pid").read_text()), signal.SIGKILL)
        wait_for(lambda: not health()["ami"]["connected"], timeout=10, what="the controller to notice")
        assert health()["status"] == "degraded"
        (ts.stack.pids / "asterisk.pid").unlink(missing_ok=True)
        ts.stack.restart_asterisk()
        ts.sipp.stop(waiting)     # those calls died with Asterisk

        after = wait_for(lambda: (h := health())["ami"]["connected"] and h["status"] == "ok" and h,
                         timeout=30, what="AMI back and the controller healthy")
        assert after["ami"]["reconnects"] == before["ami"]["reconnects"] + 1
        # the members Asterisk forgot are added again by the balancing loop (desired vs actual)
        wait_for(lambda: any(m["interface"] == "PJSIP/1001" for m in ts.queue("support").get("members", [])),
                 timeout=15, what="agent 1001 back in support")
        # the calls the crash cut off got their records (no Hangup was ever seen for them)
        wait_for(lambda: health()["records"]["active"] == 0, timeout=10, what="no call left open")
        cut = [c for c in api.get("/api/v1/calls?count=50")["calls"] if c.get("caller") == "5559001"]
        assert len(cut) == 3 and all(c["hangup_cause"] == "ended while AMI was disconnected" for c in cut), cut
        assert all(c["queue"] == "rebooking" and c["outcome"] == "left_queue" for c in cut)

        # a new caller goes through the IVR to an agent, end to end
        res = ts.sipp.call(CallerScript(steps=[("pause", 700), ("dtmf", "1")], end="wait_bye", wait_bye_ms=30_000),
                           extension=ts.extension, caller="5559002", timeout_s=45)
        assert res.ok, res.errors
        rec = wait_for(lambda: [c for c in api.get("/api/v1/calls?count=20")["calls"] if c.get("caller") == "5559002"],
                       timeout=10, what="the new call's record")[0]
        assert rec["outcome"] == "answered"
        time.sleep(2)
        tasks = health()["tasks"]
        assert tasks <= before["tasks"] + 2, (before["tasks"], tasks)   # nothing leaked across the reconnect
    finally:
        stop_test_stack(ts)
