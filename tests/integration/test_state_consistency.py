"""The live model equals Asterisk's own QueueStatus after random joins, leaves, pauses and answers."""

from __future__ import annotations

import asyncio
import random
import time

from ivr.asterisk.ami_client import AmiClient
from ivr.devtools.sipp import CallerScript

from .harness import TestStack, wait_for


def queue_status(stack: TestStack) -> dict[str, dict]:
    cfg = stack.stack.config()

    async def go() -> list:
        client = AmiClient(cfg.asterisk.ami_host, cfg.asterisk.ami_port, cfg.asterisk.ami_username,
                           cfg.asterisk.ami_secret, on_event=lambda e: None)
        await client.start()
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            return await client.list_action("QueueStatus")
        finally:
            await client.stop()

    out: dict[str, dict] = {}
    for e in asyncio.run(go()):
        q = out.setdefault(e.get("Queue", ""), {"members": {}, "callers": {}})
        if e.get("Event") == "QueueMember":
            q["members"][e["Location"]] = (e.get("Paused") == "1", int(e.get("Penalty", 0)), e.get("InCall") == "1")
        elif e.get("Event") == "QueueEntry":
            q["callers"][e["Uniqueid"]] = int(e["Position"])
    return out


def model(stack: TestStack) -> dict[str, dict]:
    out = {}
    for name, q in stack.api.get("/api/v1/queues")["queues"].items():
        out[name] = {"members": {m["interface"]: (m["paused"], m["penalty"], m["in_call"]) for m in q["members"]},
                     "callers": {c["uniqueid"]: c["position"] for c in q["callers"]}}
    return out


def same(stack: TestStack) -> bool:
    a, b = model(stack), queue_status(stack)
    return all(a.get(n) == b.get(n) for n in ("support", "refunds", "rebooking"))


def test_model_matches_queue_status_after_random_activity(stack: TestStack) -> None:
    rng = random.Random(1234)
    procs = []
    try:
        for i in range(10):
            key = rng.choice("123")                        # support, refunds, rebooking (nobody there)
            stay = rng.randint(1500, 6000)
            script = CallerScript(steps=[("pause", 600), ("dtmf", key), ("pause", stay)], end="hangup")
            procs.append(stack.sipp.start_calls(script, extension=stack.extension, caller=f"55588{i:02d}",
                                                timeout_s=60))
            if rng.random() < 0.5:
                agent = rng.choice(["1001", "1002"])
                stack.api.post(f"/api/v1/agents/{agent}/{rng.choice(['pause', 'unpause'])}", {"reason": "test"})
            time.sleep(rng.uniform(0.1, 0.6))
        # mid-activity: callers waiting in rebooking are listed with the right positions
        snapshot_ok = wait_for(lambda: same(stack), timeout=10, interval=0.3, what="model == QueueStatus mid-run")
        assert snapshot_ok
    finally:
        for p in procs:
            stack.sipp.finish(p, timeout=90)
        for agent in ("1001", "1002"):
            stack.api.post(f"/api/v1/agents/{agent}/unpause")
    wait_for(lambda: same(stack), timeout=15, interval=0.3, what="model == QueueStatus after the activity")
    final = model(stack)
    assert final["rebooking"]["callers"] == {}
    assert all(not paused for paused, _, _ in final["support"]["members"].values())
