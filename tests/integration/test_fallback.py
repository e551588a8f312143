"""No dead air: when the controller dies, calls reach the plain queue and waiting callers stay."""

from __future__ import annotations

import os
import signal
import time

from ivr.sipp import CallerScript
from ivr.stack import _pid_alive

from .harness import BROKEN_MENU_DID, TestStack, wait_for


def queue_log(stack: TestStack) -> list[list[str]]:
    path = stack.stack.asterisk_state / "log" / "queue_log"
    return [line.split("|") for line in path.read_text().splitlines()]


def test_killing_the_controller_sends_new_calls_to_the_plain_queue(stack: TestStack) -> None:
    pid = int((stack.stack.pids / "controller.pid").read_text())
    callers = "5557700"
    proc = stack.sipp.start_calls(CallerScript(steps=[("pause", 700), ("dtmf", "1")], end="wait_bye",
                                               wait_bye_ms=60_000),
                                  extension=stack.extension, caller=callers, calls=8, rate=2.0, timeout_s=90)
    try:
        time.sleep(1.6)                      # some calls are in the menu or queued, more are coming
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _pid_alive(pid), timeout=5, what="the controller to die")
        result = stack.sipp.finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        (stack.stack.pids / "controller.pid").unlink(missing_ok=True)
        stack.stack.restart_controller()
    # every caller was answered by an agent: nobody was left in dead air
    assert result.ok and result.successful == 8, result.errors
    entries = [e for e in queue_log(stack) if len(e) > 4]
    callids = {e[1] for e in entries if e[4] == "ENTERQUEUE" and e[2] == "support" and callers in "|".join(e)}
    connected = {e[1] for e in entries if e[4] == "CONNECT" and e[1] in callids}
    assert len(callids) == 8 and connected == callids
    # the controller is back, resynced, and sees the queues again
    health = stack.api.get("/health")
    assert health["status"] == "ok" and health["ami"]["connected"]
    assert "support" in stack.api.get("/api/v1/queues")["queues"]


def test_a_failing_menu_sends_the_caller_to_the_fallback_queue(stack: TestStack) -> None:
    """The number 502 runs a menu that is not loaded: the handler fails, the caller still reaches an agent."""
    res = stack.sipp.call(CallerScript(steps=[("pause", 500)], end="wait_bye", wait_bye_ms=60_000),
                          extension=BROKEN_MENU_DID, caller="5557711", timeout_s=60)
    assert res.ok, res.errors
    rec = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=50")["calls"]
                            if c.get("caller") == "5557711"], timeout=15, what="the record")[0]
    assert rec["queue"] == "support" and rec["outcome"] == "answered"
    assert rec["fallback"] == "1"
    log = (stack.stack.logs / "controller.log").read_text()
    assert f"call {rec['uniqueid']}: AGI failed (LookupError: menu 'nosuchmenu' is not loaded)" in log
