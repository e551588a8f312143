"""The balancing loop on the real stack: a flood opens the volunteer tier, the calm closes it."""

from __future__ import annotations

from ivr.devtools.sipp import CallerScript

from .harness import TestStack, wait_for

VOLUNTEERS = {"PJSIP/1004", "PJSIP/1005"}


def members(stack: TestStack, queue: str) -> set[str]:
    return {m["interface"] for m in stack.queue(queue).get("members", [])}


def test_flood_opens_volunteer_overflow_and_calm_closes_it(stack: TestStack) -> None:
    wait_for(lambda: not stack.api.get("/api/v1/balance")["tiers"].get("support", {}).get("open")
             and not members(stack, "support") & VOLUNTEERS, timeout=30, what="support to be calm")
    assert "PJSIP/1001" in members(stack, "support")
    assert "PJSIP/1002" not in members(stack, "support")     # a novice: refunds only
    assert "PJSIP/1002" in members(stack, "refunds")

    proc = stack.sipp.start_calls(CallerScript(steps=[("pause", 600), ("dtmf", "1")], end="wait_bye",
                                               wait_bye_ms=90_000),
                                  extension=stack.extension, caller="5556600", calls=14, rate=4.0, timeout_s=120)
    try:
        wait_for(lambda: stack.api.get("/api/v1/balance")["tiers"].get("support", {}).get("open"),
                 timeout=30, what="the support overflow tier to open")
        wait_for(lambda: VOLUNTEERS <= members(stack, "support"), timeout=15, what="volunteers to join support")
        penalties = {m["interface"]: m["penalty"] for m in stack.queue("support")["members"]}
        assert penalties["PJSIP/1004"] == 2 and penalties["PJSIP/1001"] == 0
    finally:
        result = stack.sipp.finish(proc, timeout=150)
    assert result.ok and result.successful == 14, result.errors
    calls = wait_for(lambda: (cs := [c for c in stack.api.get("/api/v1/calls?count=200")["calls"]
                                     if c.get("caller") == "5556600"]) and len(cs) == 14 and cs,
                     timeout=10, what="14 call records")
    assert all(c["outcome"] == "answered" for c in calls)
    assert {c["agent"] for c in calls} & {"Agent 1004", "Agent 1005"}, "no volunteer took a call"

    # calm again: after min_open_s the tier closes and the volunteers are released
    wait_for(lambda: not stack.api.get("/api/v1/balance")["tiers"]["support"]["open"], timeout=40,
             what="the tier to close")
    wait_for(lambda: not members(stack, "support") & VOLUNTEERS, timeout=10, what="volunteers to leave support")
    log = (stack.stack.logs / "controller.log").read_text()
    assert "balance: open_tier support (estimated wait" in log
    assert "balance: remove_member support PJSIP/1004 (volunteer overflow closed on support)" in log


def test_novice_leaves_when_the_last_coach_logs_out(stack: TestStack) -> None:
    assert "PJSIP/1002" in members(stack, "refunds")
    stack.api.post("/api/v1/agents/1001/logout")
    try:
        wait_for(lambda: "PJSIP/1002" not in members(stack, "refunds"), timeout=10,
                 what="the novice to leave refunds without a coach")
        assert "PJSIP/1001" not in members(stack, "support")
    finally:
        stack.api.post("/api/v1/agents/1001/login")
    wait_for(lambda: {"PJSIP/1001", "PJSIP/1002"} <= members(stack, "refunds"), timeout=10,
             what="coach and novice back in refunds")
    agents = {a["id"]: a for a in stack.api.get("/api/v1/agents")["agents"]}
    assert agents["1001"]["logged_in"] is True and agents["1002"]["skill"] == "novice"
