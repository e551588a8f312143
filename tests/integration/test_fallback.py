"""No dead air: when the controller dies, calls reach the plain queue and waiting callers stay; and nobody is
held there forever: after an Asterisk restart with the controller stopped the queue still has its agents, and a
caller nobody answers is told (or, with the controller back, offered a callback) when the queue's timeout ends."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from ivr.devtools.sipp import CallerScript
from ivr.devtools.stack import _pid_alive

from .harness import BROKEN_MENU_DID, TestStack, start_test_stack, stop_test_stack, wait_for


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


FALLBACK_TIMEOUT = 8


def test_asterisk_restarted_while_the_controller_is_down_answers_or_tells_every_caller(tmp_path: Path) -> None:
    ts = start_test_stack(tmp_path / "restart", extra={"fallback_timeout": FALLBACK_TIMEOUT})
    try:
        wait_for(lambda: any(m["interface"] == "PJSIP/1001" for m in ts.queue("support").get("members", [])),
                 timeout=15, what="agent 1001 in support")
        time.sleep(1.5)      # Asterisk writes its astdb in the background
        controller = int((ts.stack.pids / "controller.pid").read_text())
        os.kill(controller, signal.SIGTERM)
        wait_for(lambda: not _pid_alive(controller), timeout=15, what="the controller to stop")
        (ts.stack.pids / "controller.pid").unlink(missing_ok=True)
        asterisk = int((ts.stack.pids / "asterisk.pid").read_text())
        ts.stack._asterisk_cli("core stop now")
        wait_for(lambda: not _pid_alive(asterisk), timeout=20, what="Asterisk to stop")
        (ts.stack.pids / "asterisk.pid").unlink(missing_ok=True)
        ts.stack.restart_asterisk()
        members = ts.stack._asterisk_cli("queue show support").stdout
        assert "PJSIP/1001" in members, members          # restored by Asterisk itself, no controller

        # 1. the controller is down (its AGI fails): the fallback queue, where an agent answers
        res = ts.sipp.call(CallerScript(steps=[("pause", 500)], end="wait_bye", wait_bye_ms=30_000),
                           extension=ts.extension, caller="5557801", timeout_s=45)
        assert res.ok, res.errors
        entries = [e for e in queue_log(ts) if len(e) > 4]
        mine = {e[1] for e in entries if e[4] == "ENTERQUEUE" and e[2] == "support" and "5557801" in "|".join(e)}
        assert len(mine) == 1 and any(e[4] == "CONNECT" and e[1] in mine for e in entries)

        # 2. nobody can answer (the agents' phones are gone): told when the timeout ends, not held forever
        for proc in ts.agent_procs[:-1]:
            ts.sipp.stop(proc)
        messages = ts.stack.asterisk_state / "log" / "messages"
        t0 = time.monotonic()
        res = ts.sipp.call(CallerScript(steps=[("pause", 500)], end="wait_bye", wait_bye_ms=60_000),
                           extension=ts.extension, caller="5557802", timeout_s=75)
        held = time.monotonic() - t0
        assert res.ok, res.errors                        # Asterisk hung up on the caller
        assert FALLBACK_TIMEOUT <= held < FALLBACK_TIMEOUT + 30, held
        told = [ln for ln in messages.read_text(errors="replace").splitlines()
                if "not answered in the fallback queue (TIMEOUT) - told to call again (SUCCESS)" in ln]
        assert len(told) == 1, told                       # the apology was played (PLAYBACKSTATUS)

        # 3. the controller is back: the same wait ends in a callback offer that keeps the caller's place
        ts.stack.restart_controller()
        presses: list[tuple[str, str | int]] = [("pause", (FALLBACK_TIMEOUT + 2) * 1000)]
        presses += [("dtmf", "1"), ("pause", 1300)] * 14   # 1 takes the offer, the next 1 confirms the number
        joined = time.time()
        proc = ts.sipp.start_calls(CallerScript(steps=presses, end="wait_bye", wait_bye_ms=30_000),
                                   extension=BROKEN_MENU_DID, caller="12025557803", timeout_s=90)
        try:
            log = ts.stack.logs / "controller.log"
            line = wait_for(lambda: [ln for ln in log.read_text(errors="replace").splitlines()
                                     if "fallback queue timed out; callback" in ln and "12025557803" in ln],
                            timeout=75, what="the callback stored after the fallback timeout")[0]
            cb_id = re.search(r"callback (\S+) stored", line).group(1)   # type: ignore[union-attr]
            status, cb = ts.api.request("GET", f"/api/v1/callbacks/{cb_id}")
            assert status == 200 and cb["queue"] == "support" and cb["number"] == "12025557803", cb
            assert joined - 1 <= float(cb["place"]) <= joined + 8, (joined, cb)   # the place from joining
            ts.sipp.finish(proc, timeout=60)             # Asterisk ends the call: nobody is left on hold
        finally:
            if proc.poll() is None:
                proc.kill()


        def callers_left() -> list[str]:   # (the callback, once dispatched, is a new call in ivr-callback)
            return [ln for ln in ts.stack._asterisk_cli("core show channels concise").stdout.splitlines()
                    if "!ivr-route!" in ln or "!from-trunk!" in ln]
        wait_for(lambda: not callers_left(), timeout=15, what="no inbound caller left on hold")
    finally:
        stop_test_stack(ts)
