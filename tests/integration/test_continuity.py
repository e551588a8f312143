"""Caller continuity on the real stack: a dropped caller gets their place back, a notified customer
gets the short path, a customer who called in is not dialled, and the Redis side of it all."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ivr.app.config import ContinuityConfig
from ivr.continuity.service import Continuity
from ivr.devtools.sipp import CallerScript
from ivr.store.redis_store import Store

from .harness import TestStack, wait_for
from .test_campaigns import campaign, contacts_of, csv_body, post_csv
from .test_dashboard import browser, css, open_dashboard  # noqa: F401 (browser: the module's Chromium fixture)

# language 1, skip the crisis message, 3 (rebooking), then 2: "keep waiting" if a callback is offered
TO_REBOOKING = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700), ("dtmf", "3"),
                ("pause", 900), ("dtmf", "2")]


def records_of(stack: TestStack, number: str) -> list[dict]:
    return [c for c in stack.api.get("/api/v1/calls?count=300")["calls"] if c.get("caller") == number]


def waiting(stack: TestStack, queue: str) -> list[dict]:
    return stack.queue(queue).get("callers", [])


def test_a_dropped_caller_calling_back_is_answered_before_those_who_came_after(stack: TestStack,
                                                                              browser: Any) -> None:
    a, b, c = "5553001", "5553002", "5553003"
    wait_for(lambda: not waiting(stack, "rebooking"), timeout=30, what="rebooking empty before the test")
    assert not [m for m in stack.queue("rebooking").get("members", []) if not m["paused"]], \
        "rebooking must have no agent at the start of this test"
    # A joins first and drops after ~9 s in the queue; B and C join after A
    first = stack.sipp.start_calls(CallerScript(TO_REBOOKING, end="wait_bye", patience_ms=9000),
                                   extension=stack.main_extension, caller=a, timeout_s=60)
    time.sleep(3)
    others = []
    for n in (b, c):
        others.append(stack.sipp.start_calls(CallerScript(TO_REBOOKING, end="wait_bye", patience_ms=100_000),
                                             extension=stack.main_extension, caller=n, timeout_s=150))
        time.sleep(2)
    try:
        dropped = wait_for(lambda: [r for r in records_of(stack, a) if r.get("outcome") == "abandoned"], timeout=40,
                           what="A's first call to end as abandoned")[0]
        assert dropped["queue"] == "rebooking"
        kept = wait_for(lambda: stack.api.get(f"/api/v1/callers/{a}")["kept_place"], timeout=10,
                        what="A's place to be kept")
        assert kept["queue"] == "rebooking" and kept["uid"] == dropped["uniqueid"]
        assert abs(kept["place_since"] - float(dropped["joined_at"])) < 0.01
        wait_for(lambda: len(waiting(stack, "rebooking")) == 2, timeout=20, what="B and C waiting")

        # A calls again: no menu, straight back to rebooking, ahead of B and C
        again = stack.sipp.start_calls(CallerScript([], end="wait_bye", patience_ms=100_000),
                                       extension=stack.main_extension, caller=a, timeout_s=150)
        others.append(again)
        line = wait_for(lambda: (w := waiting(stack, "rebooking")) and len(w) == 3 and w, timeout=20,
                        what="A back in rebooking")
        assert [x["callerid"] for x in sorted(line, key=lambda x: x["position"])] == [a, b, c], line
        # the live picture is built once a second for every reader: up to a second behind /api/v1/queues
        live = wait_for(lambda: [x for x in stack.api.get("/api/v1/live")["queues"]["rebooking"]["callers"]
                                 if x["callerid"] == a], timeout=3, what="A in the live picture")
        assert [x.get("context", {}).get("returning") for x in live] == [True]
        assert stack.api.get(f"/api/v1/callers/{a}")["kept_place"] is None    # used up by this call
        open_dashboard(browser, stack, stack.api.token)                        # the supervisor sees it too
        tag = wait_for(lambda: css(browser, f'[data-queue="rebooking"] li[data-caller="{a}"] .tag'), timeout=10,
                       what="the returning tag on the rebooking tile")
        assert [t.text for t in tag] == ["returning", "called before"]

        stack.api.post("/api/v1/agents/1003/login")
        answered = wait_for(lambda: (rs := [r for n in (a, b, c) for r in records_of(stack, n)
                                            if r.get("outcome") == "answered"]) and len(rs) == 3 and rs,
                            timeout=90, interval=0.5, what="A, B and C answered by agent 1003")
        order = [r["caller"] for r in sorted(answered, key=lambda r: float(r["answered_at"]))]
        assert order == [a, b, c], order
        back = next(r for r in answered if r["caller"] == a)
        assert back["path"] == ["recognise", "returning"] and back["agent"] == "Agent 1003"
        assert float(json.loads(back["vars"])["place_since"]) == kept["place_since"]
        history = stack.api.get(f"/api/v1/calls/{back['uniqueid']}/caller")["caller"]
        assert [h["outcome"] for h in history["calls"]][:1] == ["abandoned"]
        log = (stack.stack.logs / "controller.log").read_text()
        assert f"+{a} returns" in log and "rejoins at their place" in log
    finally:
        stack.api.request("POST", "/api/v1/agents/1003/logout")
        for proc in [first, *others]:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)


def test_a_notified_customer_gets_the_short_path_and_hears_their_refund(stack: TestStack) -> None:
    cid = "t-notified"
    number = "+12025550321"            # ends in 1: the customer's phone presses 1 (refund) on the notice
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid))[0] == 201
    post_csv(stack, cid, csv_body([(number, "Notified", "271828")]))
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    wait_for(lambda: stack.api.get(f"/api/v1/campaigns/{cid}")["state"] == "done", timeout=90, interval=0.5,
             what="the notice campaign to finish")
    refund = stack.api.get("/api/v1/refunds/by-booking/271828")
    about = stack.api.get(f"/api/v1/callers/{number.lstrip('+')}")
    assert about["notice"]["action"] == "refund" and about["notice"]["reference"] == refund["reference"]
    assert about["notice_current"] is True

    # the customer calls in: "you are calling about your cancelled booking: 1 for your refund"
    res = stack.sipp.call(CallerScript([("pause", 1500), ("dtmf", "1")], end="wait_bye", wait_bye_ms=40_000),
                          extension=stack.main_extension, caller=number.lstrip("+"), timeout_s=60)
    assert res.ok, res.errors
    rec = wait_for(lambda: [r for r in records_of(stack, number.lstrip("+")) if r.get("menu") == "main"],
                   timeout=10, what="the inbound call's record")[0]
    assert rec["path"] == ["recognise", "notified", "notified_refund", "goodbye_self_service"], rec["path"]
    assert rec["outcome"] == "self_service"
    v = json.loads(rec["vars"])
    assert (v["notice_campaign"], v["notice_action"], v["notice_refund"], v["booking"]) == \
        (cid, "refund", refund["reference"], "271828")
    assert v["refund_status"] == "received"
    seen = stack.api.get(f"/api/v1/calls/{rec['uniqueid']}/caller")
    assert seen["caller"]["refunds"][0]["reference"] == refund["reference"]
    assert any(h.get("kind") == "notice" and h.get("keypress") == "1" for h in seen["caller"]["calls"])


def test_a_contact_who_called_in_is_not_dialled_and_one_on_a_call_is_not_dialled_now(stack: TestStack) -> None:
    cid = "t-reached"
    called_in, on_call, other = "+12025550331", "+12025550341", "+12025550351"
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid))[0] == 201
    post_csv(stack, cid, csv_body([(called_in, "Called in", ""), (other, "Other", "")]))
    # one contact calls the line before the campaign dials: marked reached at once
    res = stack.sipp.call(CallerScript([("pause", 1500)], end="hangup"), extension=stack.main_extension,
                          caller=called_in.lstrip("+"), timeout_s=30)
    assert res.ok, res.errors
    wait_for(lambda: contacts_of(stack, cid)[called_in]["status"] == "reached", timeout=10,
             what="the contact marked reached")
    # another is in the menu, on a call with us, when they are added to the campaign and it starts
    busy = stack.sipp.start_calls(CallerScript([("pause", 800), ("dtmf", "1"), ("pause", 25_000)], end="hangup"),
                                  extension=stack.main_extension, caller=on_call.lstrip("+"), timeout_s=60)
    try:
        wait_for(lambda: stack.api.get(f"/api/v1/callers/{on_call.lstrip('+')}")["live"], timeout=20,
                 what="the contact on a call with us")
        post_csv(stack, cid, csv_body([(on_call, "On a call", "")]))
        before = stack.sipp.invites_received(stack.customer_port)
        stack.api.post(f"/api/v1/campaigns/{cid}/start")
        wait_for(lambda: contacts_of(stack, cid)[other]["status"] != "pending", timeout=30, interval=0.5,
                 what="the other contact dialled")
        time.sleep(2)
        c = contacts_of(stack, cid)
        assert (c[called_in]["status"], c[called_in]["attempts"], c[called_in]["last_outcome"]) == \
            ("reached", "0", "called in")
        assert (c[on_call]["status"], c[on_call]["attempts"]) == ("pending", "0")
        after = stack.sipp.invites_received(stack.customer_port)
        for n in (called_in, on_call):
            assert after.get(n.lstrip("+"), 0) == before.get(n.lstrip("+"), 0), f"{n} was dialled"
        log = (stack.stack.logs / "controller.log").read_text()
        assert f"campaign {cid}: contact 3 is on a call with us: not dialled now" in log
        assert stack.api.get(f"/api/v1/campaigns/{cid}")["counts"]["reached"] == 1
        # when that call ends, the contact has been in touch: reached too, never dialled
        wait_for(lambda: contacts_of(stack, cid)[on_call]["status"] == "reached", timeout=40, interval=0.5,
                 what="the contact on a call marked reached when the call ended")
        assert stack.api.get(f"/api/v1/campaigns/{cid}")["counts"]["reached"] == 2
        assert stack.sipp.invites_received(stack.customer_port).get(on_call.lstrip("+"), 0) == \
            before.get(on_call.lstrip("+"), 0)
    finally:
        stack.api.request("POST", f"/api/v1/campaigns/{cid}/stop")
        if busy.poll() is None:
            busy.terminate()
        busy.wait(timeout=30)


def test_places_history_and_sweep_in_redis(stack: TestStack) -> None:
    """The Redis side against the stack's Redis (own prefix): a drop keeps a place for the window, a return
    takes it once, an unused place becomes a callback with the same place in line, history is capped."""

    async def run() -> None:
        rc = stack.stack.config().redis
        store = Store.from_url(rc.url, "ctest", rc.password)
        await store.redis.delete(*(await store.redis.keys("ctest:*")) or ["ctest:none"])
        c = Continuity(ContinuityConfig(window=60, callback_dropped=True, history=3), store)
        try:
            t = time.time()
            drop = {"uniqueid": "u1", "caller": "5554001", "outcome": "abandoned", "queue": "support", "wait": "40",
                    "joined_at": str(t - 40), "started_at": str(t - 50), "ended_at": str(t), "language": "zh"}
            await c.remember(drop)
            found = await c.recognise("u2", "5554001")
            assert found.dropped and found.dropped["queue"] == "support" and found.dropped["lang"] == "zh"
            assert abs(found.dropped["place_since"] - (t - 40)) < 0.01
            assert c.place_since["u2"] == found.dropped["place_since"] and found.repeat
            assert (await c.recognise("u3", "5554001")).dropped is None        # one return per drop
            assert await c.busy("+5554001")
            c.channel_alive = lambda uid: uid != "u3"     # u3's channel is gone (its end never recorded)
            assert await c.busy("+5554001")                     # u2 still counts
            c.channel_alive = lambda uid: False
            assert not await c.busy("+5554001")                 # both stale: forgotten
            assert await store.redis.scard("ctest:caller:+5554001:live") == 0
            c.channel_alive = None
            await c.mark_live("5554001", "u2")
            await c.mark_live("5554001", "u3")
            # u2 drops again: the place still dates from the first call
            await c.remember({**drop, "uniqueid": "u2", "joined_at": str(t + 5), "ended_at": str(t + 20)},
                             c.place_since.pop("u2"))
            await c.remember({"uniqueid": "u3", "caller": "5554001", "outcome": "ivr_hangup", "started_at": str(t)})
            assert not await c.busy("5554001")
            about = await c.describe("5554001")
            assert abs(about["kept_place"]["place_since"] - (t - 40)) < 0.01
            assert [x["uid"] for x in about["calls"]] == ["u3", "u2", "u1"]
            for i in range(4):
                await c.remember({"uniqueid": f"x{i}", "caller": "5554001", "outcome": "self_service",
                                  "started_at": str(t)})
            assert len((await c.describe("5554001"))["calls"]) == 3                  # capped at history

            assert await c.sweep(now=t + 10, callbacks=store.callbacks) == 0         # the window is still open
            assert await c.sweep(now=t + 90, callbacks=store.callbacks) == 1
            pending = await store.callbacks.pending(10)
            assert [(p["number"], p["queue"], p["lang"]) for p in pending] == [("5554001", "support", "zh")]
            assert abs(float(pending[0]["place"]) - (t - 40)) < 0.01
            assert await c.sweep(now=t + 90, callbacks=store.callbacks) == 0         # swept once

            await c.noticed("+5554002", {"campaign": "k", "action": "callback", "lang": "fa"})
            await c.noticed("+5554003", {"campaign": "k", "action": "busy"})         # nobody heard it
            assert (await c.recognise("u4", "5554002")).notice["action"] == "callback"
            assert (await c.recognise("u5", "5554003")).notice is None
            assert await c.answered_since("5554001", t - 100) is False
            await c.remember({"uniqueid": "u6", "caller": "5554001", "outcome": "answered",
                              "answered_at": str(t + 100), "started_at": str(t + 90)})
            assert await c.answered_since("5554001", t + 50) and not await c.answered_since("5554001", t + 200)
        finally:
            await c.drain()
            await store.redis.delete(*(await store.redis.keys("ctest:*")) or ["ctest:none"])
            await store.close()

    asyncio.run(run())


def test_a_flagged_caller_goes_ahead_of_those_waiting(stack: TestStack) -> None:
    """A supervisor flags a number as medical (priority 8): that caller joins rebooking ahead of the two
    callers already waiting there; the flag is audited, shown, and removed again."""
    flagged, x, y = "5557801", "5557810", "5557811"
    wait_for(lambda: not waiting(stack, "rebooking"), timeout=30, what="rebooking empty before the test")
    status, body = stack.api.request("PUT", f"/api/v1/callers/{flagged}/flag", {"group": "vip"})
    assert status == 400 and "known: medical" in body["error"], body
    flag = stack.api.request("PUT", f"/api/v1/callers/{flagged}/flag",
                             {"group": "medical", "note": "dialysis patient", "hours": 2})[1]
    assert flag["group"] == "medical" and flag["priority"] == 8 and flag["number"] == f"+{flagged}"
    assert stack.api.get(f"/api/v1/callers/{flagged}")["flag"]["note"] == "dialysis patient"
    audit = stack.api.get("/api/v1/audit")["audit"]
    assert any(e["action"] == "caller.flag" and e["target"] == f"+{flagged}" for e in audit)
    procs = []
    try:
        for n in (x, y):   # they give up after 30 s, the flagged caller after 15 s: the test ends by itself
            procs.append(stack.sipp.start_calls(CallerScript(TO_REBOOKING, end="wait_bye", patience_ms=30_000),
                                                extension=stack.main_extension, caller=n, timeout_s=120))
            time.sleep(1.5)
        wait_for(lambda: len(waiting(stack, "rebooking")) == 2, timeout=30, what="two callers waiting")
        procs.append(stack.sipp.start_calls(CallerScript(TO_REBOOKING, end="wait_bye", patience_ms=15_000),
                                            extension=stack.main_extension, caller=flagged, timeout_s=120))
        line = wait_for(lambda: (w := waiting(stack, "rebooking")) and len(w) == 3 and w, timeout=30,
                        what="the flagged caller in rebooking")
        assert [c["callerid"] for c in sorted(line, key=lambda c: c["position"])] == [flagged, x, y], line
        # the live picture is built once a second for every reader: up to a second behind /api/v1/queues
        live = wait_for(lambda: [c for c in stack.api.get("/api/v1/live")["queues"]["rebooking"]["callers"]
                                 if c["callerid"] == flagged], timeout=3, what="the caller in the live picture")
        assert [c.get("context", {}).get("group") for c in live] == ["medical"]
        for proc in procs:
            assert stack.sipp.finish(proc, timeout=90).ok
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    rec = wait_for(lambda: records_of(stack, flagged), timeout=15, what="the flagged caller's record")[0]
    assert json.loads(rec["vars"])["priority_group"] == "medical"
    assert stack.api.request("DELETE", f"/api/v1/callers/{flagged}/flag")[0] == 200
    assert stack.api.get(f"/api/v1/callers/{flagged}")["flag"] is None
    assert stack.api.request("DELETE", f"/api/v1/callers/{flagged}/flag")[0] == 404
