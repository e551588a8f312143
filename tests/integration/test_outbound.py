"""The outbound guard on the real stack (its allow-list: valid +1202 numbers, fixed lines and mobiles): every
way of making the line call a number refuses one outside it, and says so in the audit log and /metrics;
an allowed callback still goes out end to end (tests/integration/test_callbacks.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ivr.devtools.demo import prompt_seconds
from ivr.devtools.sipp import CallerScript
from ivr.store.outbound import hour_of
from ivr.store.redis_store import Store

from .harness import TestStack, wait_for
from .test_campaigns import campaign, contacts_of, csv_body, post_csv
from .test_continuity import records_of
from .test_metrics import scrape

PREMIUM = "449012345678"           # a UK premium-rate number, and outside the stack's allow-list
ABROAD = "+442079460000"           # a valid London number: outside the allow-list


def refused(stack: TestStack, purpose: str, reason: str) -> float:
    status, text = scrape(stack, stack.api.token)
    assert status == 200
    for family in text_string_to_metric_families(text):
        if family.name == "ivr_outbound_refused":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels == {"purpose": purpose, "reason": reason}:
                    return s.value
    return 0.0


def audited(stack: TestStack, target: str, purpose: str) -> list[dict]:
    return [e for e in stack.api.get("/api/v1/audit")["audit"]
            if e["action"] == "outbound.refused" and e["target"] == target and e["new"]["purpose"] == purpose]


def test_a_typed_callback_number_outside_the_guard_is_refused_in_the_menu_and_never_stored(stack: TestStack) -> None:
    """Main menu 9, then 2 ("another number"), a premium number typed: the caller hears that it cannot be
    called, their own number is offered again, they take it; the typed number is stored nowhere."""
    caller = "12025550140"
    prompts = Path(stack.stack.config().prompts_dir)
    before = refused(stack, "callback", "not_allowed_prefix")
    refused_ms = int(prompt_seconds(prompts, "en", "callback-number-refused") * 1000)
    steps = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700), ("dtmf", "9"),
             ("pause", 1500), ("dtmf", "2"), ("pause", 1500), ("dtmf", PREMIUM + "#"),
             ("pause", refused_ms + 1500), ("dtmf", "1")]
    res = stack.sipp.call(CallerScript(steps=steps, end="wait_bye", wait_bye_ms=40_000),
                          extension=stack.main_extension, caller=caller, timeout_s=90)
    assert res.ok, res.errors
    rec = wait_for(lambda: [r for r in records_of(stack, caller) if r.get("menu") == "main" and r.get("outcome")],
                   timeout=10, what="the IVR call's record")[0]
    assert rec["path"][4:] == ["callback", "callback-number-refused"], rec["path"]
    assert rec["outcome"] == "callback_requested"
    cb = stack.api.get(f"/api/v1/callbacks/{json.loads(rec['vars'])['callback_id']}")
    assert cb["number"] == caller
    assert PREMIUM not in {c["number"] for c in stack.api.get("/api/v1/callbacks")["callbacks"]}
    assert audited(stack, f"+{PREMIUM}", "callback")
    assert refused(stack, "callback", "not_allowed_prefix") == before + 1
    log = (stack.stack.logs / "controller.log").read_text()
    assert f"call {rec['uniqueid']}: callback to a typed number refused by the outbound guard" in log
    assert f"outbound callback call {rec['uniqueid']} to +********5678 refused: not_allowed_prefix" in log
    assert f"AGI >> STREAM FILE \"{prompts}/en/callback-number-refused\"" in log


def test_an_agent_mobile_outside_the_guard_is_refused_by_the_api(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/agents", {"name": "Premium Vol", "queues": ["support"],
                                                                "mobile": PREMIUM})
    assert status == 400 and body["error"] == ("mobile: refused by the outbound guard (not_allowed_prefix): see "
                                               "outbound.* in the configuration"), body
    assert "Premium Vol" not in {a["name"] for a in stack.api.get("/api/v1/agents")["agents"]}
    status, body = stack.api.request("PATCH", "/api/v1/agents/1003", {"mobile": "19005550199"})   # US 900
    assert status == 400 and "(not_allowed_prefix)" in body["error"], body
    assert next(a for a in stack.api.get("/api/v1/agents")["agents"] if a["id"] == "1003")["mobile"] == ""
    assert audited(stack, "+19005550199", "agent_mobile")
    assert refused(stack, "agent_mobile", "not_allowed_prefix") >= 2


def test_a_campaign_contact_outside_the_guard_is_never_dialled(stack: TestStack) -> None:
    """A campaign with no allowed_prefixes of its own: the deployment's list still holds."""
    cid = "t-guard"
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid, allowed_prefixes=[]))[0] == 201
    report = post_csv(stack, cid, csv_body([(ABROAD, "Abroad", ""), ("+12025550150", "Home", "")]))
    assert report["imported"] == 2, report
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    wait_for(lambda: stack.api.get(f"/api/v1/campaigns/{cid}")["state"] == "done", timeout=90, interval=0.5,
             what="the campaign to finish")
    c = contacts_of(stack, cid)
    assert (c[ABROAD]["status"], c[ABROAD]["last_outcome"], c[ABROAD]["attempts"]) == \
        ("failed", "refused: not_allowed_prefix", "0")
    assert c["+12025550150"]["status"] == "done"
    invites = stack.sipp.invites_received(stack.customer_port)
    assert ABROAD.lstrip("+") not in invites and invites.get("12025550150") == 1
    assert audited(stack, ABROAD, "campaign")


def test_a_refund_decision_call_outside_the_guard_is_not_queued(stack: TestStack) -> None:
    status, rec = stack.api.request("POST", "/api/v1/refunds", {"booking": "404040", "number": ABROAD})
    assert status == 201, rec
    decided = stack.api.post(f"/api/v1/refunds/{rec['reference']}/status", {"status": "approved"})
    assert decided["notice"] == "not notified: refused by the outbound guard (not_allowed_prefix)", decided
    assert stack.api.get(f"/api/v1/refunds/{rec['reference']}")["notice"] == decided["notice"]
    if stack.api.request("GET", "/api/v1/campaigns/refund-updates")[0] == 200:   # made by another test
        assert ABROAD not in contacts_of(stack, "refund-updates")
    assert audited(stack, ABROAD, "refund")


def test_the_per_number_cap_holds_a_dial_back(stack: TestStack) -> None:
    """A number that had its hour's calls (the count is shared in Redis): a campaign does not dial it now."""
    number = "+12025550130"
    cfg = stack.stack.config()

    async def use_up_the_hour() -> None:
        store = Store.from_config(cfg.redis)
        try:
            await store.redis.set(store.keys.outbound_number(hour_of(), number), cfg.outbound.per_number_hourly,
                                  ex=7200)
        finally:
            await store.close()

    asyncio.run(use_up_the_hour())
    before = refused(stack, "campaign", "cap_number")
    cid = "t-cap"
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid))[0] == 201
    post_csv(stack, cid, csv_body([(number, "Capped", "")]))
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    try:
        wait_for(lambda: refused(stack, "campaign", "cap_number") > before, timeout=30, what="the cap refusal")
        time.sleep(2)
        row = contacts_of(stack, cid)[number]
        assert (row["status"], row["attempts"]) == ("pending", "0"), row     # kept for the next hour
        assert number.lstrip("+") not in stack.sipp.invites_received(stack.customer_port)
        assert stack.api.get(f"/api/v1/campaigns/{cid}")["state"] == "running"
    finally:
        stack.api.post(f"/api/v1/campaigns/{cid}/stop")
