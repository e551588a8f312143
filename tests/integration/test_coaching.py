"""A supervisor asks an experienced agent to coach another on a live call: the coach's phone rings and,
answered, joins the agent's call by ChanSpy (whisper: only the agent hears the coach). When the coach hangs
up, their channel leaves ChanSpy and is gone; the agent's call goes on."""

from __future__ import annotations

from ivr.devtools.sipp import CallerScript, free_port

from .harness import TestStack, wait_for

COACH = "1003"   # experienced, rebooking, logged out: their SIPp phone answers and hangs up after 2 s


def channels(stack: TestStack) -> list[str]:
    """The channel names Asterisk has now."""
    res = stack.stack._asterisk_cli("core show channels concise")
    return [line.split("!", 1)[0] for line in res.stdout.splitlines() if "!" in line]


def log_lines(stack: TestStack, *needles: str) -> list[str]:
    text = (stack.stack.logs / "controller.log").read_text(encoding="utf-8", errors="replace")
    return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


def test_a_coach_whispers_into_an_agents_call_and_leaves_when_they_hang_up(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/agents", {"name": "Agent Coached", "queues": ["rebooking"],
                                                                "skill": "experienced", "team": "a"})
    assert status == 201, body
    aid, password = body["agent"]["id"], body["sip"]["password"]
    port = free_port()
    assert stack.sipp.register(aid, password, port).ok
    # a 15 s call, time to coach; the agent hangs up at the end (so the call ends properly, whatever
    # happens here). The agent's phone streams audio as a real one does: ChanSpy detaches from the agent's
    # channel on one of its frames, and with no media at all the coach's channel would hang in ChanSpy.
    phone = stack.sipp.start_agent(port, talk_ms=15_000, sends_audio=True)
    caller = None
    try:
        stack.api.request("PATCH", f"/api/v1/agents/{aid}", {"tier": "core"})
        stack.api.post(f"/api/v1/agents/{aid}/login")
        wait_for(lambda: any(m["interface"] == f"PJSIP/{aid}" for m in stack.queue("rebooking").get("members", [])),
                 timeout=15, what="the agent in rebooking")
        # nobody to coach yet: a clear 409, nothing rung
        st, err = stack.api.request("POST", f"/api/v1/agents/{aid}/coach", {"coach": COACH})
        assert st == 409 and "not on a call" in err["error"], err

        caller = stack.sipp.start_calls(CallerScript([("pause", 700), ("dtmf", "3")], end="wait_bye",
                                                     wait_bye_ms=60_000),
                                        extension=stack.extension, caller="5557300", timeout_s=90)
        wait_for(lambda: any(c.startswith(f"PJSIP/{aid}-") for c in channels(stack)), timeout=20,
                 what="the agent on the call")

        for bad, code, why in (({"coach": aid}, 409, "an agent cannot coach themselves"),
                               ({"coach": "nobody"}, 404, "coach: no agent 'nobody'"),
                               ({"coach": COACH, "mode": "shout"}, 400, "mode")):
            st, err = stack.api.request("POST", f"/api/v1/agents/{aid}/coach", bad)
            assert st == code and why in err["error"], err
        st, err = stack.api.request("POST", "/api/v1/agents/nobody/coach", {"coach": COACH})
        assert st == 404, err
        assert not any(c.startswith(f"PJSIP/{COACH}-") for c in channels(stack))   # no bad request rang anyone

        out = stack.api.post(f"/api/v1/agents/{aid}/coach", {"coach": COACH, "mode": "whisper"})
        assert out["ringing"] == f"PJSIP/{COACH}" and out["mode"] == "whisper"
        joined = wait_for(lambda: log_lines(stack, f"coaching: PJSIP/{COACH}-", f"joins PJSIP/{aid}-"),
                          timeout=15, what="ChanSpy joining the call")
        spy_channel = joined[0].split("coaching: ", 1)[1].split(" ", 1)[0]
        assert spy_channel in channels(stack)

        # the coach's phone hangs up after 2 s: ChanSpy stops, their channel is gone, the call goes on
        wait_for(lambda: log_lines(stack, f"coaching: {spy_channel} leaves PJSIP/{aid}-"), timeout=15,
                 what="ChanSpy leaving when the coach hung up")
        wait_for(lambda: spy_channel not in channels(stack), timeout=10, what="the coach's channel gone")
        live = channels(stack)
        assert any(c.startswith(f"PJSIP/{aid}-") for c in live), live          # the agent still on the call
        assert caller.poll() is None                                           # and the caller too

        audit = stack.api.get("/api/v1/audit")["audit"]
        assert any(a["action"] == "agent.coach" and a["target"] == aid and a["new"] == {"coach": COACH,
                                                                                        "mode": "whisper"}
                   for a in audit)
    finally:
        try:
            # the agent hangs up: nothing of the call stays behind for the next tests
            wait_for(lambda: not any(c.startswith((f"PJSIP/{aid}-", f"PJSIP/{COACH}-")) for c in channels(stack)),
                     timeout=30, what="the coached call over")
            if caller is not None:
                assert caller.wait(10) == 0, "the caller's SIPp did not end cleanly"
        finally:
            if caller is not None and caller.poll() is None:
                caller.kill()
            stack.sipp.stop(phone)
            stack.api.request("DELETE", f"/api/v1/agents/{aid}")
