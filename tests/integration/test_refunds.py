"""The refund request lifecycle on the real stack: created in the IVR, listed and approved through the API,
the customer (a SIPp phone behind the trunk) called with the decision, then hearing the new status when
they call in; bulk decisions, the approval policy and the audit trail."""

from __future__ import annotations

import json

from ivr.devtools.sipp import CallerScript

from .harness import TestStack, wait_for
from .test_continuity import records_of
from .test_campaigns import contacts_of

CUSTOMER = "12025550361"      # ends in 1: the customer's phone presses 1 ("hear it again") on the call
BOOKING = "161803"
INTRO = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700)]


def test_a_request_made_in_the_ivr_is_approved_and_the_customer_is_called_and_hears_it(stack: TestStack) -> None:
    # 1. the customer asks for a refund in the IVR: option 2, the booking number, a reference read back
    res = stack.sipp.call(CallerScript(INTRO + [("dtmf", "2"), ("pause", 900), ("dtmf", BOOKING)], end="wait_bye",
                                       wait_bye_ms=40_000),
                          extension=stack.main_extension, caller=CUSTOMER, timeout_s=60)
    assert res.ok, res.errors
    rec = stack.api.get(f"/api/v1/refunds/by-booking/{BOOKING}")
    ref = rec["reference"]
    assert (rec["status"], rec["caller"], rec["source"], rec["lang"]) == ("received", CUSTOMER, "ivr", "en")

    # 2. an approver lists what is waiting and approves it with a note
    listed = stack.api.get("/api/v1/refunds?status=received&count=1000")
    assert ref in [r["reference"] for r in listed["refunds"]] and listed["counts"]["received"] >= 1
    status, bad = stack.api.request("POST", f"/api/v1/refunds/{ref}/status", {"status": "paid"})
    assert status == 400 and f"refund {ref} is received: it can become approved, rejected, not paid" in bad["error"]
    decided = stack.api.post(f"/api/v1/refunds/{ref}/status", {"status": "approved", "note": "ticket checked"})
    assert decided["status"] == "approved" and decided["notice"].startswith("queued: campaign refund-updates")
    step = decided["history"][-1]
    assert (step["status"], step["from"], step["by"], step["note"]) == ("approved", "received", "admin",
                                                                        "ticket checked")
    audit = stack.api.get("/api/v1/audit")["audit"]
    assert any(e["action"] == "refund.decide" and e["target"] == ref for e in audit)

    # 3. the decision call: paced by the campaign engine, answered by the customer's phone, heard
    contact = wait_for(lambda: [c for c in contacts_of(stack, "refund-updates").values()
                                if c["number"] == f"+{CUSTOMER}" and c["status"] == "done"], timeout=60,
                       interval=0.5, what="the decision call answered")[0]
    assert contact["last_outcome"] == "heard" and contact["attempts"] == "1"
    notice_call = wait_for(lambda: [r for r in records_of(stack, CUSTOMER) if r.get("campaign") == "refund-updates"],
                           timeout=10, what="the decision call's record")[0]
    log = (stack.stack.logs / "controller.log").read_text()
    uid = notice_call["uniqueid"]
    for prompt in ("en/refund-update-intro", "en/refund-update-status", "en/status-approved"):
        assert f"call {uid}: AGI >> STREAM FILE" in log and prompt in log
    assert f'call {uid}: AGI >> SAY DIGITS "{BOOKING}"' in log

    # 4. the customer calls in: the short path knows the booking, 1 says the new status
    res = stack.sipp.call(CallerScript([("pause", 1500), ("dtmf", "1")], end="wait_bye", wait_bye_ms=40_000),
                          extension=stack.main_extension, caller=CUSTOMER, timeout_s=60)
    assert res.ok, res.errors
    back = wait_for(lambda: [r for r in records_of(stack, CUSTOMER) if r.get("menu") == "main"
                             and "notified" in r["path"]], timeout=10, what="the inbound call's record")[0]
    assert back["path"] == ["recognise", "notified", "notified_refund", "goodbye_self_service"], back["path"]
    v = json.loads(back["vars"])
    assert (v["refund_status"], v["refund_reference"], v["booking"]) == ("approved", ref, BOOKING)


def create(stack: TestStack, body: dict) -> dict:
    status, rec = stack.api.request("POST", "/api/v1/refunds", body)
    assert status == 201, rec
    return rec


def test_bulk_decisions_policy_and_bad_input(stack: TestStack) -> None:
    # a medical worker's request is approved by policy at once; an ordinary one waits
    medical = create(stack, {"booking": "272727", "amount": "310.50", "group": "medical"})
    assert medical["status"] == "approved" and medical["history"][-1]["by"] == "policy"
    big = create(stack, {"booking": "282828", "amount": "900", "group": "medical"})
    assert big["status"] == "received"                        # over auto_approve_max: an approver decides
    plain = create(stack, {"booking": "292929"})
    assert plain["status"] == "received"
    for body, why in (({"booking": "12"}, "booking: expected 4-12 digits"),
                      ({"booking": "303030", "amount": "lots"}, "amount: expected a number"),
                      ({"booking": "303030", "group": "VIP!"}, "group: lower-case"),
                      ({"booking": "303030", "lang": "de"}, "lang: expected one of")):
        status, err = stack.api.request("POST", "/api/v1/refunds", body)
        assert status == 400 and why in err["error"], (body, err)

    out = stack.api.post("/api/v1/refunds/decisions", {"decisions": [
        {"reference": big["reference"], "status": "approved", "note": "manager ok"},
        {"reference": "999999999", "status": "approved"},
        {"reference": plain["reference"], "status": "paid"},            # not allowed from received
        {"reference": plain["reference"], "status": "rejected", "note": "no ticket"},
        {"reference": medical["reference"], "status": "paid"}]})
    assert (out["decided"], out["failed"]) == (3, 2), out
    errors = [r.get("error", "") for r in out["results"] if not r["ok"]]
    assert "no refund request '999999999'" in errors[0] and "can become approved, rejected, not paid" in errors[1]
    # no phone number on these requests: nobody to call, said so
    assert all(r["notice"] == "not notified: no phone number on the request" for r in out["results"] if r["ok"])
    assert stack.api.get(f"/api/v1/refunds/{plain['reference']}")["status"] == "rejected"
    paid = stack.api.get("/api/v1/refunds?status=paid")
    assert medical["reference"] in [r["reference"] for r in paid["refunds"]]
    assert stack.api.request("GET", "/api/v1/refunds?status=lost")[0] == 400
    assert stack.api.request("POST", "/api/v1/refunds/decisions", {"references": "x"})[0] == 400
