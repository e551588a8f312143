"""A caller who chose a callback is called back through the trunk and bridged to an agent."""

from __future__ import annotations

import json

from ivr.devtools.sipp import CallerScript

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


def _request_callback(stack: TestStack, number: str, queue: str, place: float) -> str:
    """A callback request as the IVR stores it (keeping the caller's place from ``place``)."""
    import asyncio

    from ivr.store.redis_store import Store

    async def request() -> str:
        cfg = stack.stack.config()
        store = Store.from_config(cfg.redis)
        try:
            return str((await store.callbacks.request(number, queue=queue, joined_at=place))["id"])
        finally:
            await store.close()
    return asyncio.run(request())


def _drop_callback(stack: TestStack, cb_id: str) -> None:
    import asyncio

    from ivr.store.redis_store import Store

    async def drop() -> None:
        cfg = stack.stack.config()
        store = Store.from_config(cfg.redis)
        try:
            await store.redis.zrem(store.keys.callbacks_pending, cb_id)
            await store.redis.hset(store.keys.callback(cb_id), "status", "failed")
        finally:
            await store.close()
    asyncio.run(drop())


def test_a_callback_being_dialled_when_the_controller_is_killed_is_dialled_again_after_restart(
        stack: TestStack) -> None:
    """SIGKILL of the controller while it dials a callback (the customer's phone rings: last digit 7 rings
    until cancelled): after the restart the callback is not dialled again while that call still rings,
    then it is dialled again, keeping the caller's place, and it stays in line afterwards."""
    import os
    import signal
    import time

    from ivr.callbacks.service import RING_TIMEOUT_S

    number = "12025557187"   # a number the stack's outbound guard allows (+1 202); last digit 7 rings on
    place = round(time.time() - 600, 3)
    invites = lambda: stack.sipp.invites_received(stack.customer_port).get(number, 0)  # noqa: E731
    before = invites()
    cb_id = _request_callback(stack, number, "support", place)
    try:
        wait_for(lambda: invites() == before + 1, timeout=30, what="the callback to be dialled")
        first_at = time.monotonic()
        assert stack.api.get(f"/api/v1/callbacks/{cb_id}")["status"] == "dialling"
        pid = int((stack.stack.pids / "controller.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        (stack.stack.pids / "controller.pid").unlink(missing_ok=True)
        stack.stack.restart_controller()

        # dialled again after the restart, but only once the first call stopped ringing (never two at once)
        wait_for(lambda: invites() >= before + 2, timeout=RING_TIMEOUT_S + 45, interval=0.2,
                 what="the callback to be dialled again after the restart")
        assert time.monotonic() - first_at >= RING_TIMEOUT_S - 2, time.monotonic() - first_at
        assert invites() == before + 2
        # the second call is not answered either: back in line, still at the caller's first place
        cb = wait_for(lambda: (c := stack.api.get(f"/api/v1/callbacks/{cb_id}"))["status"] == "pending" and c,
                      timeout=RING_TIMEOUT_S + 20, what="the callback back in line")
        assert float(cb["place"]) == place and cb["last_outcome"] == "no answer", cb
        line = [c["id"] for c in stack.api.get("/api/v1/callbacks")["callbacks"]]
        assert cb_id in line
        log = (stack.stack.logs / "controller.log").read_text()
        assert f"callback {cb_id}: claim recovered" in log
    finally:
        _drop_callback(stack, cb_id)


def test_a_caller_facing_a_long_wait_is_promised_a_callback_and_the_promise_is_kept(tmp_path) -> None:
    """Nobody serves rebooking now, but the plan (balance.forecast) has its agent later: the caller pressing 3
    faces an endless wait (callback_over: auto) and is offered a callback the line can keep; they accept and
    hear "within N minutes". The callback keeps promise_s and due; once the rebooking agent logs in it is
    dialled, answered, and counted kept (the callback's record, its call record and /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    from .harness import TEST_BALANCE, start_test_stack, stop_test_stack
    from .test_metrics import scrape

    plan = {"agents_by_hour": [5] * 24, "arrivals_by_hour": [0] * 24, "share_to_agents": 1.0}
    ts = start_test_stack(tmp_path / "promise", extra={"balance": {**TEST_BALANCE, "forecast": plan}})
    try:
        number = "12025550164"     # the stack's outbound guard allows +1 202; the customer's phone answers
        steps = [("pause", 800), ("dtmf", "1"), ("pause", 500), ("dtmf", "#"), ("pause", 700), ("dtmf", "3"),
                 ("pause", 1500), ("dtmf", "1"), ("pause", 2500), ("dtmf", "1")]
        res = ts.sipp.call(CallerScript(steps=steps, end="wait_bye", wait_bye_ms=30_000),
                           extension=ts.main_extension, caller=number, timeout_s=45)
        assert res.ok, res.errors
        rec = wait_for(lambda: [c for c in ts.api.get("/api/v1/calls?count=50")["calls"]
                                if c.get("caller") == number and c.get("outcome") == "callback_requested"],
                       timeout=10, what="the IVR call's record")[0]
        assert rec["path"][4:] == ["q_rebooking", "callback"]
        cb_id = json.loads(rec["vars"])["callback_id"]
        line = {c["id"]: c for c in ts.api.get("/api/v1/callbacks")["callbacks"]}
        cb = line[cb_id]                                   # the list shows the promise and when it is due
        assert cb["queue"] == "rebooking" and int(cb["promise_s"]) >= 900, cb
        assert float(cb["due"]) == float(cb["requested_at"]) + int(cb["promise_s"]) or \
            abs(float(cb["due"]) - float(cb["requested_at"]) - int(cb["promise_s"])) < 1
        log = (ts.stack.logs / "controller.log").read_text()
        assert "in rebooking: offering a callback" in log
        assert f"callback {cb_id} stored for {number} (queue rebooking, promised within" in log

        ts.api.post("/api/v1/agents/1003/login")          # the rebooking agent arrives: the callback is made
        done = wait_for(lambda: (c := ts.api.get(f"/api/v1/callbacks/{cb_id}"))["status"] == "done" and c,
                        timeout=40, what="the callback to be answered")
        assert done["last_outcome"] == "answered" and done["kept"] == "yes", done
        assert float(done["made_at"]) <= float(done["due"])
        status, text = scrape(ts, ts.api.token)
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples[("ivr_callbacks_made_total", (("kept", "yes"),))] == 1
        assert samples[("ivr_callback_promise_seconds_count", ())] == 1
        assert samples[("ivr_callback_promise_seconds_sum", ())] == int(cb["promise_s"])
        back = wait_for(lambda: [c for c in ts.api.get("/api/v1/calls?count=50")["calls"]
                                 if c.get("callback_id") == cb_id and c.get("outcome")],
                        timeout=40, what="the callback's call record")
        assert back[0]["callback_kept"] == "yes" and back[0]["queue"] == "rebooking"
    finally:
        stop_test_stack(ts)
