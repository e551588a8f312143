"""A supervisor asks an experienced agent to coach a novice on a live call: the coach's phone rings and,
answered, joins the novice's call by ChanSpy (whisper: only the novice hears the coach)."""

from __future__ import annotations

from ivr.sipp import CallerScript, free_port

from .harness import TestStack, wait_for


def test_a_coach_whispers_into_a_novices_call(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/agents", {"name": "Novice Coached", "queues": ["rebooking"],
                                                                "skill": "experienced", "team": "a"})
    assert status == 201, body
    aid, password = body["agent"]["id"], body["sip"]["password"]
    port = free_port()
    assert stack.sipp.register(aid, password, port).ok
    phone = stack.sipp.start_agent(port, talk_ms=15_000)          # a long call: time to coach
    caller = None
    try:
        stack.api.request("PATCH", f"/api/v1/agents/{aid}", {"tier": "core"})
        stack.api.post(f"/api/v1/agents/{aid}/login")
        wait_for(lambda: any(m["interface"] == f"PJSIP/{aid}" for m in stack.queue("rebooking").get("members", [])),
                 timeout=15, what="the novice in rebooking")
        caller = stack.sipp.start_calls(CallerScript([("pause", 700), ("dtmf", "3")], end="wait_bye",
                                                     wait_bye_ms=40_000),
                                        extension=stack.extension, caller="5557300", timeout_s=60)
        wait_for(lambda: [a for a in stack.api.get("/api/v1/live")["agents"] if a["id"] == aid and a["in_call"]],
                 timeout=20, what="the novice on the call")

        for bad, why in (({"coach": aid}, "coach: another agent's id"), ({"coach": "1001", "mode": "shout"}, "mode")):
            st, err = stack.api.request("POST", f"/api/v1/agents/{aid}/coach", bad)
            assert st == 400 and why in err["error"], err
        out = stack.api.post(f"/api/v1/agents/{aid}/coach", {"coach": "1003", "mode": "whisper"})
        assert out["ringing"] == "PJSIP/1003"
        log = stack.stack.logs / "controller.log"
        line = wait_for(lambda: [ln for ln in log.read_text().splitlines() if "coaching: PJSIP/1003-" in ln
                                 and f"joins PJSIP/{aid}-" in ln], timeout=15, what="ChanSpy joining the call")
        assert line
        audit = stack.api.get("/api/v1/audit")["audit"]
        assert any(a["action"] == "agent.coach" and a["target"] == aid and a["new"]["mode"] == "whisper" for a in audit)
    finally:
        if caller is not None and caller.poll() is None:
            caller.terminate()
            caller.wait(10)
        stack.sipp.stop(phone)
        stack.api.request("DELETE", f"/api/v1/agents/{aid}")
