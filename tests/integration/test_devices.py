"""Agents' SIP devices on the real stack: a phone that stops answering qualify loses its queue calls to
the agent's mobile behind the trunk (who must press 1 to take them), and gets them back when it returns."""

from __future__ import annotations

import time
from typing import Any

from ivr.devtools.sipp import CallerScript, free_port

from .harness import TestStack, wait_for

MOBILE = "12025550311"   # the SIPp customer phones answer numbers ending in 1 and press 1


def agent(stack: TestStack, aid: str) -> dict[str, Any]:
    return next(a for a in stack.api.get("/api/v1/live")["agents"] if a["id"] == aid)


def on_mobile(stack: TestStack, aid: str, expected: bool) -> None:
    """The live picture (built once a second for every reader, so up to a second behind /api/v1/queues)
    shows the agent on their mobile, or not."""
    wait_for(lambda: agent(stack, aid)["on_mobile"] is expected, timeout=3,
             what=f"on_mobile {expected} in the live picture")


def members(stack: TestStack, queue: str) -> set[str]:
    return {m["interface"] for m in stack.queue(queue).get("members", [])}


def test_unreachable_phone_fails_over_to_the_mobile_with_a_keypress(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/agents", {
        "name": "Mobile Vol", "queues": ["rebooking"], "skill": "experienced", "tier": "core", "mobile": MOBILE})
    assert status == 201, body
    aid, password = body["agent"]["id"], body["sip"]["password"]
    assert body["agent"]["mobile"] == MOBILE
    device, mobile = f"PJSIP/{aid}", f"Local/{MOBILE}@agent-mobile/n"
    port = free_port()
    phone = stack.sipp.start_registered_phone(aid, password, port)   # registers, then answers qualify pings
    try:
        stack.api.post(f"/api/v1/agents/{aid}/login")
        wait_for(lambda: agent(stack, aid)["device"] == "NOT_INUSE", timeout=15, what="the phone to be reachable")
        wait_for(lambda: device in members(stack, "rebooking"), timeout=10, what="the phone in rebooking")
        on_mobile(stack, aid, False)

        # the phone goes dark (power cut at home): qualify fails, calls go to the mobile instead
        stack.sipp.stop(phone)
        wait_for(lambda: agent(stack, aid)["device"] == "UNAVAILABLE", timeout=20, what="qualify to fail")
        wait_for(lambda: members(stack, "rebooking") & {device, mobile} == {mobile}, timeout=10,
                 what="the mobile in rebooking instead of the phone")
        on_mobile(stack, aid, True)
        before = stack.sipp.invites_received(stack.customer_port).get(MOBILE, 0)
        result = stack.sipp.call(CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye",
                                              wait_bye_ms=60_000),
                                 extension=stack.extension, caller="5557311", timeout_s=90)
        assert result.ok, result.errors
        assert stack.sipp.invites_received(stack.customer_port).get(MOBILE, 0) == before + 1
        assert stack.sipp.invite_callers(stack.customer_port)[MOBILE] == {"5550100"}   # the line's caller ID
        record = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=30")["calls"]
                                   if c.get("caller") == "5557311"], timeout=10, what="the call record")[0]
        assert record["outcome"] == "answered" and record["agent"] == "Mobile Vol", record
        actions = stack.api.get("/api/v1/balance")["actions"]
        assert actions.get("add_member", 0) >= 2

        # the phone comes back: calls go to it again and the mobile leaves the queue
        phone = stack.sipp.start_registered_phone(aid, password, port)
        wait_for(lambda: members(stack, "rebooking") & {device, mobile} == {device}, timeout=20,
                 what="the phone back in rebooking, the mobile out")
        on_mobile(stack, aid, False)
    finally:
        stack.sipp.stop(phone)
        stack.api.request("DELETE", f"/api/v1/agents/{aid}")
    wait_for(lambda: not members(stack, "rebooking") & {device, mobile}, timeout=10, what="the agent gone")


def test_a_mobile_that_does_not_press_1_never_takes_the_call(stack: TestStack) -> None:
    """Voicemail or a pocket answer: the whisper asks for 1; no key, no queue call."""
    silent = "12025550319"     # the customer phones answer numbers ending in 9 and stay silent
    status, body = stack.api.request("POST", "/api/v1/agents", {
        "name": "Silent Vol", "queues": ["rebooking"], "skill": "experienced", "tier": "core", "mobile": silent})
    assert status == 201, body
    aid = body["agent"]["id"]
    mobile = f"Local/{silent}@agent-mobile/n"
    try:
        stack.api.post(f"/api/v1/agents/{aid}/login")   # never registered: the device is unavailable from the start
        wait_for(lambda: mobile in members(stack, "rebooking"), timeout=15, what="the mobile in rebooking")
        adds = stack.api.get("/api/v1/balance")["actions"].get("add_member", 0)
        time.sleep(3)   # the swap is stable: no flapping between the phone and the mobile
        assert members(stack, "rebooking") & {mobile, f"PJSIP/{aid}"} == {mobile}
        assert stack.api.get("/api/v1/balance")["actions"].get("add_member", 0) == adds
        result = stack.sipp.call(CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye",
                                              patience_ms=25_000),
                                 extension=stack.extension, caller="5557319", timeout_s=60)
        assert result.ok, result.errors
        assert stack.sipp.invites_received(stack.customer_port).get(silent, 0) >= 1
        record = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=30")["calls"]
                                   if c.get("caller") == "5557319"], timeout=15, what="the call record")[0]
        assert record["outcome"] != "answered", record
    finally:
        stack.api.request("DELETE", f"/api/v1/agents/{aid}")
    # removing the agent takes the mobile out of the queue too
    wait_for(lambda: mobile not in members(stack, "rebooking"), timeout=10, what="the mobile out of rebooking")
