"""A caller who chose a callback is called back through the trunk and bridged to an agent."""

from __future__ import annotations

import json

from ivr.sipp import CallerScript

from .harness import TestStack, wait_for


def test_callback_is_dialled_when_an_agent_is_free_and_bridged(stack: TestStack) -> None:
    number = "12025550123"     # a real-looking +1 202 number: the stack's outbound guard allows +1202
    steps = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700), ("dtmf", "9"),
             ("pause", 4500), ("dtmf", "1")]
    res = stack.sipp.call(CallerScript(steps=steps, end="wait_bye", wait_bye_ms=60_000),
                          extension=stack.main_extension, caller=number, timeout_s=60)
    assert res.ok, res.errors
    rec = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=100")["calls"]
                            if c.get("caller") == number and c.get("outcome") == "callback_requested"],
                   timeout=10, what="the IVR call's record")[0]
    cb_id = json.loads(rec["vars"])["callback_id"]

    # the balancing loop dials it as soon as support has an idle agent; the customer's phone answers
    cb = wait_for(lambda: (c := stack.api.get(f"/api/v1/callbacks/{cb_id}"))["status"] == "done" and c,
                  timeout=60, what="the callback to be answered")
    assert cb["last_outcome"] == "answered" and cb["attempts"] == "1"
    assert cb_id not in {c["id"] for c in stack.api.get("/api/v1/callbacks")["callbacks"]}

    # the called-back customer joined support and an agent took the call
    back = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=100")["calls"]
                             if c.get("caller") == number and c.get("queue") == "support"
                             and c.get("outcome") == "answered"], timeout=60, what="the callback's queue call")
    assert back[0]["agent"] in ("Agent 1001", "Agent 1004", "Agent 1005")
    log = (stack.stack.logs / "controller.log").read_text()
    assert "balance: dispatch_callback support" in log
    assert f"callback {cb_id}: {number} answered, in queue support" in log
