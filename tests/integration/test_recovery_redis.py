"""Recovery of the dialer's leases and of callback claims on a real Redis, with AMI failing at times to
list the live calls (then nothing is settled: a call that may be up is never taken for gone)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ivr.app.aiotasks import cancel_and_wait
from ivr.asterisk.ami_client import AmiError
from ivr.callbacks.service import CallbackDispatcher
from ivr.campaigns import contacts, contacts_parse
from ivr.campaigns.dial_rules import account_code
from ivr.campaigns.dialer import Dialer
from ivr.campaigns.model import campaign_from_dict
from ivr.app.config import Config
from ivr.store.redis_store import Store


class ScriptedAmi:
    """CoreShowChannels answers: an exception is raised, a list is returned."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.ready = asyncio.Event()
        self.ready.set()
        self.connected = True

    async def list_action(self, name: str, fields: Any = None, *, timeout: float | None = None) -> list[Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_recovery_does_not_take_an_ami_failure_for_no_live_calls(store: Store) -> None:
    cid = "t-rec"
    code = account_code(cid, "1", 1)
    ami = ScriptedAmi(AmiError("CoreShowChannels: no response within 20s"),
                      [{"Channel": "PJSIP/trunk-00000001", "AccountCode": code}])
    dialer = Dialer(Config(), store, ami)  # type: ignore[arg-type]
    await dialer.create(campaign_from_dict({"id": cid, "name": cid, "message": {"en": "notice-cancelled"}}))
    n, _ = await contacts.add_contact(store.redis, "t", cid, contacts_parse.Contact(
        number="+12025550100", lang="en", tz="America/New_York", line=1))
    # dialled by the run that was killed: claimed (due -> leases), attempt 1 written before the Originate
    await store.redis.zrem(f"t:campaign:{cid}:due", n)
    await store.redis.zadd(f"t:campaign:{cid}:leases", {str(n): 1e12})
    await contacts.set_status(store.redis, "t", cid, n, "in_progress", attempts="1", attempt_id=code)

    # AMI cannot say which calls are up: nothing is settled (the callee may be on the line)
    with pytest.raises(AmiError):
        await dialer.recover()
    rec = await contacts.contact(store.redis, "t", cid, n)
    assert rec is not None and rec["status"] == "in_progress" and rec.get("last_outcome", "") == ""
    assert await store.redis.zscore(f"t:campaign:{cid}:leases", str(n)) is not None
    assert await store.redis.zcard(f"t:campaign:{cid}:due") == 0
    # the next try sees the call up: left alone, its slot held
    assert (await dialer.recover())["still_live"] == 1
    assert set(dialer.running[cid].active) == {code}
    assert (await contacts.contact(store.redis, "t", cid, n))["status"] == "in_progress"  # type: ignore[index]


async def test_callback_claims_of_a_killed_run_are_recovered_once_their_call_is_gone(store: Store) -> None:
    cb = await store.callbacks.request("5550107", queue="support", joined_at=1000.0)
    killed = Store(store.redis, "t")
    assert await killed.callbacks.claim(cb["id"], node="ivr1")
    ami = ScriptedAmi(AmiError("no AMI connection for CoreShowChannels"),
                      [{"Channel": "PJSIP/trunk-00000003", "AccountCode": f"cb:{cb['id']}"}], [])
    restarted = Store(store.redis, "t")
    dispatcher = CallbackDispatcher(Config(), ami, restarted.callbacks, None, None)  # type: ignore[arg-type]  # recovery dials nothing: no prompts, no guard
    with pytest.raises(AmiError):
        await dispatcher.recover()
    assert await store.redis.zcard(store.keys.callbacks_pending) == 0   # unknown: left as it was
    assert await dispatcher.recover() == {cb["id"]: "still_live"}         # still ringing: not dialled again
    assert await store.redis.zcard(store.keys.callbacks_pending) == 0
    assert await dispatcher.recover() == {cb["id"]: "requeued"}           # the call is gone: back in line
    assert await store.redis.zrange(store.keys.callbacks_pending, 0, -1, withscores=True) == [(cb["id"], 1000.0)]
    assert dispatcher.recovered == 1 and await dispatcher.recover() == {}


async def test_callback_recovery_errors_are_retried_and_shown(store: Store) -> None:
    cb = await store.callbacks.request("5550108", queue="support", joined_at=1000.0)
    assert await Store(store.redis, "t").callbacks.claim(cb["id"], node="ivr1")
    ami = ScriptedAmi(AmiError("no AMI connection for CoreShowChannels"), [])
    dispatcher = CallbackDispatcher(Config(), ami, store.callbacks, None, None)  # type: ignore[arg-type]  # recovery dials nothing: no prompts, no guard
    task = asyncio.create_task(dispatcher.run(every=0.01))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if dispatcher.recover_errors and dispatcher.recovered:
                break
        assert dispatcher.recover_errors == 1 and dispatcher.recovered == 1 and not task.done()
        assert dispatcher.last_recover_error == ""
        assert await store.redis.zrange(store.keys.callbacks_pending, 0, -1) == [cb["id"]]
    finally:
        assert not await cancel_and_wait({task})   # the Redis client may swallow one cancel (ivr/app/aiotasks.py)


async def test_an_outcome_that_closes_a_contact_cancels_the_retry_planned_before_it(store: Store) -> None:
    """AMI drops while a notice rings: the Originate fails ("failed", a retry is planned), but the call goes
    on in Asterisk, is answered, and the notice stores the callee's choice for the same attempt. The
    contact is closed and is not dialled again."""
    from ivr.campaigns.dial_rules import Running

    cid = "t-late"
    code = account_code(cid, "1", 1)
    dialer = Dialer(Config(), store, ScriptedAmi())  # type: ignore[arg-type]
    campaign = campaign_from_dict({"id": cid, "name": cid, "message": {"en": "notice-cancelled"},
                                   "window": {"start": "00:00", "end": "23:59"}, "allowed_prefixes": ["+1"]})
    await dialer.create(campaign)
    n, _ = await contacts.add_contact(store.redis, "t", cid, contacts_parse.Contact(
        number="+12025550100", lang="en", tz="America/New_York", line=1))
    await store.redis.zrem(f"t:campaign:{cid}:due", n)
    await store.redis.zadd(f"t:campaign:{cid}:leases", {str(n): 1e12})
    await contacts.set_status(store.redis, "t", cid, n, "in_progress", attempts="1", attempt_id=code)

    await dialer.finish_attempt(cid, str(n), 1, "failed")
    assert await store.redis.zscore(f"t:campaign:{cid}:due", str(n)) is not None
    await dialer.finish_attempt(cid, str(n), 1, "refund", keypress="1")
    rec = await contacts.contact(store.redis, "t", cid, n)
    assert rec is not None and (rec["status"], rec["last_outcome"]) == ("done", "refund")
    assert await store.redis.zscore(f"t:campaign:{cid}:due", str(n)) is None
    # the other order: the failure is reported after the outcome that closed the contact
    await dialer.finish_attempt(cid, str(n), 1, "unknown")
    rec = await contacts.contact(store.redis, "t", cid, n)
    assert rec is not None and (rec["status"], rec["last_outcome"]) == ("done", "refund")
    assert await store.redis.zscore(f"t:campaign:{cid}:due", str(n)) is None

    # a closed contact that still finds its way to the dialler (an entry left in due) is not dialled
    await store.redis.zadd(f"t:campaign:{cid}:leases", {str(n): 1e12})
    r = Running(campaign)
    await dialer._dial(cid, r, str(n), f"t:campaign:{cid}:hour:test")
    rec = await contacts.contact(store.redis, "t", cid, n)
    assert rec is not None and rec["status"] == "done" and rec["attempts"] == "1" and not r.active
    assert await store.redis.zcard(f"t:campaign:{cid}:leases") == 0
