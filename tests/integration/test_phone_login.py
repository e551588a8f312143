"""Agents log in and out from their phone: *81 / *82 and their PIN (set by a supervisor, stored hashed);
the balancing loop then adds them to or removes them from their queues on the real Asterisk."""

from __future__ import annotations

from .harness import TestStack, wait_for
from .test_outcomes import agent_password

AGENT = "1003"        # rebooking only, logged out at the start


def logged_in(stack: TestStack) -> bool:
    return next(a for a in stack.api.get("/api/v1/agents")["agents"] if a["id"] == AGENT)["logged_in"]


def in_rebooking(stack: TestStack) -> bool:
    return any(m["interface"] == f"PJSIP/{AGENT}" for m in stack.queue("rebooking").get("members", []))


def test_an_agent_logs_in_and_out_from_their_phone_with_a_pin(stack: TestStack) -> None:
    stack.api.post(f"/api/v1/agents/{AGENT}/logout")
    wait_for(lambda: not in_rebooking(stack), timeout=10, what=f"{AGENT} out of rebooking")
    password = agent_password(stack, AGENT)

    # no PIN yet: told to ask a supervisor, nothing changes
    assert stack.sipp.dial_as(AGENT, password, "*81", digits="1234#").ok
    assert not logged_in(stack)
    log = (stack.stack.logs / "controller.log").read_text()
    assert f"phone login: agent {AGENT} has no PIN" in log

    status, err = stack.api.request("PUT", f"/api/v1/agents/{AGENT}/pin", {"pin": "12"})
    assert status == 400 and "pin: 4-8 digits" in err["error"]
    assert stack.api.request("PUT", f"/api/v1/agents/{AGENT}/pin", {"pin": "4711"})[0] == 200
    assert "4711" not in (stack.stack.logs / "controller.log").read_text()

    # the right PIN: logged in, and the loop puts the phone in rebooking
    assert stack.sipp.dial_as(AGENT, password, "*81", digits="4711#").ok
    assert logged_in(stack)
    wait_for(lambda: in_rebooking(stack), timeout=10, what=f"{AGENT} in rebooking after the phone login")

    # a wrong PIN logs nobody out (the caller gives up after one try)
    stack.sipp.dial_as(AGENT, password, "*82", digits="9999#", hold_ms=6000, timeout_s=12)
    assert logged_in(stack)
    assert f"phone login: agent {AGENT}: wrong PIN" in (stack.stack.logs / "controller.log").read_text()

    assert stack.sipp.dial_as(AGENT, password, "*82", digits="4711#").ok
    assert not logged_in(stack)
    wait_for(lambda: not in_rebooking(stack), timeout=10, what=f"{AGENT} out of rebooking after the phone logout")
    audit = stack.api.get("/api/v1/audit")["audit"]
    assert any(a["action"] == "agent.login" and a["target"] == AGENT and a["who"] == f"phone {AGENT}" for a in audit)


def test_pins_are_hashed_and_guessing_is_throttled(stack: TestStack) -> None:
    import asyncio

    from ivr.agents.roster import PIN_TRIES, Roster
    from ivr.store.redis_store import Store

    async def run() -> None:
        cfg = stack.stack.config()
        store = Store.from_config(cfg.redis)
        roster = Roster(cfg, store)
        try:
            await roster.set_pin("1005", "24680", by="test")
            stored = await store.redis.hget(f"{cfg.redis.prefix}:agent:1005", "pin")
            assert stored.startswith("pbkdf2$") and "24680" not in stored
            assert await roster.check_pin("1005", "24680") is True
            for _ in range(PIN_TRIES):
                assert await roster.check_pin("1005", "11111") is False
            assert await roster.check_pin("1005", "24680") is False         # locked for PIN_LOCK_S
            await store.redis.delete(f"{cfg.redis.prefix}:agent:1005:pin_fails")
            assert await roster.check_pin("1005", "24680") is True
            assert await roster.check_pin("1004", "24680") is None           # no PIN set
        finally:
            await store.close()
    asyncio.run(run())
