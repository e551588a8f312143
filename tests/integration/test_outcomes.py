"""Call outcomes on the real stack: 0 from a self-service step reaches an agent with the context on the
channels, dispositions by API and by the agent's phone (*7<code>), the report by reason, and a recorded
message routed by reason to a team's feedback queue."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ivr.devtools.demo import prompt_seconds
from ivr.devtools.sipp import CallerScript

from .harness import OUTCOMES_MENU_DID, TestStack, wait_for
from .test_continuity import records_of

INTRO = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700)]


def agent_password(stack: TestStack, agent: str) -> str:
    """The SIP password `ivr up` generated for a configured agent (from the rendered pjsip.conf)."""
    text = (stack.stack.workdir / "asterisk" / "etc" / "pjsip.conf").read_text()
    m = re.search(rf"^\[{agent}-auth\]\n(?:[^\[]*?\n)?password = (\S+)$", text, re.M)
    assert m, f"no password for {agent} in pjsip.conf"
    return m.group(1)


def test_zero_in_self_service_reaches_an_agent_with_the_context_and_dispositions_are_set(stack: TestStack) -> None:
    number = "5556601"
    # refund status (1), then 0 instead of a booking number
    res = stack.sipp.call(CallerScript(INTRO + [("dtmf", "1"), ("pause", 1200), ("dtmf", "0#")], end="wait_bye",
                                       wait_bye_ms=60_000), extension=stack.main_extension, caller=number,
                          timeout_s=90)
    assert res.ok, res.errors
    rec = wait_for(lambda: [r for r in records_of(stack, number) if r.get("outcome") == "answered"], timeout=20,
                   what="the escalated call answered")[0]
    assert rec["path"][-3:] == ["refund_status", "escalated", "q_refunds"], rec["path"]
    assert (rec["escalated_from"], rec["reason"], rec["queue"]) == ("refund_status", "refund_status", "refunds")
    # the agent's channel carried it: AgentConnect's DestChanVariable (manager.conf channelvars)
    assert rec["agent_context"] == "refund_status"
    assert json.loads(rec["vars"])["escalated_from"] == "refund_status"
    uid, agent = rec["uniqueid"], rec["agent"].split()[-1]
    log = (stack.stack.logs / "controller.log").read_text()
    assert f"call {uid}: 0 pressed in refund_status: self-service left for q_refunds" in log
    assert f'call {uid}: AGI >> SET VARIABLE "CALLERID(name)" "0 refund_status"' in log

    # a supervisor sets the disposition by API; an unknown code is refused with the list
    status, err = stack.api.request("POST", f"/api/v1/calls/{uid}/disposition", {"disposition": "77"})
    assert status == 400 and "unknown code or name '77'" in err["error"] and "2 refund_requested" in err["error"]
    out = stack.api.post(f"/api/v1/calls/{uid}/disposition", {"disposition": "refund_requested"})
    assert (out["disposition"], out["disposition_code"]) == ("refund_requested", "2")

    # the agent corrects it from their phone: *79 (other) during wrap-up
    dial = stack.sipp.dial_as(agent, agent_password(stack, agent), "*79")
    assert dial.ok, dial.errors
    after = wait_for(lambda: (c := stack.call_record(uid)) and c.get("disposition") == "other" and c, timeout=10,
                     what="the disposition set from the phone")
    assert (after["disposition_by"], after["disposition_code"]) == (f"agent {agent}", "9")
    audit = stack.api.get("/api/v1/audit")["audit"]
    assert any(a["action"] == "call.disposition" and a["target"] == uid and a["new"] == "other" for a in audit)

    # a code that does not exist: refused, the agent hears so, nothing changes
    assert stack.sipp.dial_as(agent, agent_password(stack, agent), "*788").ok
    assert stack.call_record(uid)["disposition"] == "other"
    assert "disposition by phone refused: disposition: unknown code or name '88'" in \
        (stack.stack.logs / "controller.log").read_text()

    # the report by reason counts the escalation and the (last) disposition
    rows = {r["reason"]: r for r in stack.api.get("/api/v1/reports/reasons?hours=1")["rows"]}
    assert rows["refund_status"]["escalated"] >= 1
    assert rows["refund_status"]["dispositions"].get("other", 0) >= 1


def test_a_recorded_message_goes_to_the_team_of_the_reason(stack: TestStack) -> None:
    number = "5556602"
    # the caller starts speaking when the invitation and the beep are over
    intro_ms = int(prompt_seconds(Path(stack.stack.config().prompts_dir), "en", "feedback-intro") * 1000)
    speech = Path(stack.stack.config().prompts_dir) / "en" / "crisis-banner.ulaw"    # ~7 s of someone talking
    res = stack.sipp.call(CallerScript([("pause", intro_ms + 700), ("speech", str(speech))], end="wait_bye",
                                       wait_bye_ms=40_000),
                          extension=OUTCOMES_MENU_DID, caller=number, timeout_s=60)
    assert res.ok, res.errors
    items = wait_for(lambda: [i for i in stack.api.get("/api/v1/feedback?team=operations")["items"]
                              if i["caller"] == number], timeout=10, what="the feedback item of operations")
    item = items[0]
    assert (item["kind"], item["reason"], item["status"]) == ("recording", "rebooking", "open")
    assert 3 <= float(item["seconds"]) <= 8
    req_status, audio = raw_get(stack, f"/api/v1/feedback/{item['id']}/audio")
    assert req_status == 200 and audio[:4] == b"RIFF" and audio[8:12] == b"WAVE" and len(audio) > 20_000
    assert stack.api.get("/api/v1/feedback")["teams"]["operations"] >= 1
    done = stack.api.post(f"/api/v1/feedback/{item['id']}/done", {"note": "rebooking rules explained"})
    assert done["status"] == "done"
    assert item["id"] not in [i["id"] for i in stack.api.get("/api/v1/feedback?team=operations")["items"]]
    assert stack.api.request("GET", "/api/v1/feedback?team=nope")[0] == 400
    rec = wait_for(lambda: [r for r in records_of(stack, number)], timeout=10, what="the call record")[0]
    assert rec["outcome"] == "feedback_left" and json.loads(rec["vars"])["feedback_id"] == item["id"]


def raw_get(stack: TestStack, path: str) -> tuple[int, bytes]:
    import urllib.request
    req = urllib.request.Request(stack.api.base + path, headers={"Authorization": f"Bearer {stack.api.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()
