"""The whole path on the real stack: SIPp caller -> IVR -> queue -> SIPp agent -> call record."""

from __future__ import annotations

from ivr.devtools.sipp import CallerScript

from .harness import TestStack, wait_for


def test_caller_waits_then_agent_answers_and_record_is_written(stack: TestStack) -> None:
    # 1003 serves "rebooking" but is logged out: the caller must wait.
    assert stack.queue("rebooking").get("members") == []
    proc = stack.sipp.start_calls(
        CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye", wait_bye_ms=30_000),
        extension=stack.extension, caller="5551003", timeout_s=45)
    try:
        waiting = wait_for(lambda: stack.queue("rebooking").get("callers"), timeout=15,
                           what="the caller to wait in rebooking")
        caller = waiting[0]
        assert caller["callerid"] == "5551003"
        assert caller["position"] == 1
        uid = caller["uniqueid"]
        assert stack.queue("rebooking")["waiting"] == 1

        stack.api.post("/api/v1/agents/1003/login")
        wait_for(lambda: any(m["in_call"] for m in stack.queue("rebooking").get("members", [])),
                 timeout=15, what="agent 1003 to be connected")
        assert stack.queue("rebooking")["waiting"] == 0
    finally:
        result = stack.sipp.finish(proc, timeout=60)
    assert result.ok, f"SIPp caller failed: {result.errors}\n{result.stdout[-1500:]}"

    record = wait_for(lambda: (r := stack.call_record(uid)) and r.get("finished") and r, timeout=10,
                      what="the call record")
    assert record["caller"] == "5551003"
    assert record["menu"] == "short"
    assert record["path"] == ["main", "q_rebooking"]
    assert record["queue"] == "rebooking"
    assert record["outcome"] == "answered"
    assert record["agent"] == "Agent 1003"
    assert int(record["wait"]) >= 1
    assert int(record["talk"]) >= 1
    assert record["fallback"] == "0"
    calls = stack.api.get("/api/v1/calls?count=50")["calls"]
    assert any(c["uniqueid"] == uid and c["outcome"] == "answered" for c in calls)
    stack.api.post("/api/v1/agents/1003/logout")
    wait_for(lambda: stack.queue("rebooking").get("members") == [], timeout=10, what="1003 to leave the queue")


def test_caller_pressing_1_is_answered_by_a_logged_in_agent(stack: TestStack) -> None:
    result = stack.sipp.call(CallerScript(steps=[("pause", 700), ("dtmf", "1")], end="wait_bye", wait_bye_ms=30_000),
                             extension=stack.extension, caller="5551001", timeout_s=45)
    assert result.ok, result.errors
    calls = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=20")["calls"]
                              if c.get("caller") == "5551001"], timeout=10, what="a record for 5551001")
    assert calls[0]["outcome"] == "answered"
    assert calls[0]["queue"] == "support"
    assert calls[0]["agent"] in ("Agent 1001", "Agent 1004", "Agent 1005")  # core, or a volunteer in overflow


def test_caller_who_hangs_up_in_the_menu_is_recorded(stack: TestStack) -> None:
    result = stack.sipp.call(CallerScript(steps=[("pause", 1500)], end="hangup"),
                             extension=stack.extension, caller="5551009", timeout_s=30)
    assert result.ok, result.errors
    calls = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=20")["calls"]
                              if c.get("caller") == "5551009"], timeout=10, what="a record for 5551009")
    assert calls[0]["outcome"] == "ivr_hangup"
    assert calls[0]["path"] == ["main"]
    assert "queue" not in calls[0]


def test_callers_who_hang_up_at_once_are_recorded_too(stack: TestStack) -> None:
    """Ten callers hang up the moment the call is answered, before (or just as) the IVR starts: each one
    leaves a record, from the channel's first event, none is lost."""
    result = stack.sipp.call(CallerScript(steps=[], end="hangup"), extension=stack.main_extension,
                             caller_prefix="5551100", calls=10, rate=10, timeout_s=30)
    assert result.ok and result.successful == 10, result.errors
    numbers = {f"5551100{i}" for i in range(1, 11)}
    calls = wait_for(lambda: (cs := [c for c in stack.api.get("/api/v1/calls?count=300")["calls"]
                                     if c.get("caller") in numbers]) and len(cs) == 10 and cs,
                     timeout=15, what="ten records")
    assert {c["outcome"] for c in calls} <= {"before_ivr", "ivr_hangup"}, [c["outcome"] for c in calls]
    assert all(c["dialled"] == stack.main_extension and c["inbound"] == "1" for c in calls)
