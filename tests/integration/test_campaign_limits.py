"""The dialler's limits on the real stack: the calling window in the callee's own time zone (a contact
outside it waits for the window's next start, one inside is dialled), ``pacing.max_channels`` (never more
calls in flight) and ``hourly_cap`` (no more dials this clock hour; the rest stay due and wait).
The callees are the SIPp customer phones behind the test carrier; a number ending in 9 answers and
presses nothing, so its call stays up for the whole notice."""

from __future__ import annotations

import asyncio
import datetime
import time
from zoneinfo import ZoneInfo

from ivr.store.redis_store import Store

from .harness import TestStack, wait_for
from .test_campaigns import campaign, contacts_of, post_csv

BASE = "+120255502"


def due_at(stack: TestStack, cid: str, n: str) -> float | None:
    """When the dialler will next consider contact ``n`` (its score on the campaign's due line)."""
    async def read() -> float | None:
        store = Store.from_config(stack.stack.config().redis)
        try:
            return await store.redis.zscore(store.keys.campaign_due(cid), n)
        finally:
            await store.close()
    return asyncio.run(read())


def zone_at(now: datetime.datetime, hours: range) -> str:
    """A fixed-offset zone whose local hour is in ``hours`` right now."""
    for off in range(-12, 15):
        name = f"Etc/GMT{'+' if off <= 0 else '-'}{abs(off)}"   # POSIX signs: Etc/GMT+5 is UTC-5
        if now.astimezone(ZoneInfo(name)).hour in hours:
            return name
    raise AssertionError(f"no zone has a local hour in {hours}")


def test_a_contact_outside_its_calling_window_waits_for_the_window(stack: TestStack) -> None:
    cid = "t-window"
    now = datetime.datetime.now(datetime.timezone.utc)
    inside, outside = zone_at(now, range(10, 16)), zone_at(now, range(0, 6))
    assert stack.api.request("POST", "/api/v1/campaigns",
                             campaign(cid, window={"start": "09:00", "end": "17:00"}, max_attempts=1))[0] == 201
    body = ("number,name,tz\n" f"{BASE}19,In window,{inside}\n" f"{BASE}29,Night there,{outside}\n").encode()
    assert post_csv(stack, cid, body)["imported"] == 2
    before = stack.sipp.invites_received(stack.customer_port)
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    try:
        wait_for(lambda: contacts_of(stack, cid)[f"{BASE}19"]["attempts"] == "1", timeout=60, interval=0.5,
                 what="the contact inside its window to be dialled")
        time.sleep(3)   # the dialler has had many turns since: the other contact is still not dialled
        c = contacts_of(stack, cid)
        night = c[f"{BASE}29"]
        assert (night["status"], night["attempts"]) == ("pending", "0"), night
        after = stack.sipp.invites_received(stack.customer_port)
        assert after.get(f"{BASE}29".lstrip("+"), 0) == before.get(f"{BASE}29".lstrip("+"), 0)
        assert after.get(f"{BASE}19".lstrip("+"), 0) == before.get(f"{BASE}19".lstrip("+"), 0) + 1
        # it waits for 09:00 in its own zone, not in the controller's
        local = now.astimezone(ZoneInfo(outside))
        nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
        assert due_at(stack, cid, night["n"]) == nine.timestamp()
        assert stack.api.get(f"/api/v1/campaigns/{cid}")["state"] == "running"   # not done: someone is owed a call
    finally:
        stack.api.post(f"/api/v1/campaigns/{cid}/stop")


def test_max_channels_and_the_hourly_cap_hold_on_the_real_stack(stack: TestStack) -> None:
    cid = "t-caps"
    if time.time() % 3600 > 3600 - 90:          # the cap counts per clock hour: do not straddle two
        time.sleep(3600 - time.time() % 3600 + 1)
    body = campaign(cid, max_attempts=1, hourly_cap=4, pacing={"cps": 5, "max_channels": 2, "max_transfers": 2})
    assert stack.api.request("POST", "/api/v1/campaigns", body)[0] == 201
    numbers = [f"{BASE}{i}9" for i in range(3, 9)]                 # six callees that answer and press nothing
    csv = ("number,name\n" + "".join(f"{n},Caps {i}\n" for i, n in enumerate(numbers))).encode()
    assert post_csv(stack, cid, csv)["imported"] == 6
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    peak, samples = 0, 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            live = stack.api.get(f"/api/v1/campaigns/{cid}")
            peak, samples = max(peak, live["active"]), samples + 1
            c = contacts_of(stack, cid)
            if sum(r["attempts"] == "1" and r["status"] != "in_progress" for r in c.values()) >= 4 \
                    and live["active"] == 0:
                break
            time.sleep(0.2)
        assert samples > 20 and peak == 2, (peak, samples)            # two at a time, and two were reached
        time.sleep(3)
        c = contacts_of(stack, cid)
        dialled = [n for n in numbers if c[n]["attempts"] == "1"]
        waiting = [n for n in numbers if c[n]["attempts"] == "0"]
        assert len(dialled) == 4 and len(waiting) == 2, c
        # the cap is checked before a contact is claimed: the other two stay due but are not dialled while
        # this clock hour lasts (the dialler has had many turns since the fourth dial)
        before = stack.sipp.invites_received(stack.customer_port)
        time.sleep(5)
        c = contacts_of(stack, cid)
        assert all((c[n]["status"], c[n]["attempts"]) == ("pending", "0") for n in waiting), c
        after = stack.sipp.invites_received(stack.customer_port)
        assert all(after.get(n.lstrip("+"), 0) == before.get(n.lstrip("+"), 0) for n in waiting)
        assert all(due_at(stack, cid, c[n]["n"]) is not None for n in waiting)   # still owed a call
        assert stack.api.get(f"/api/v1/campaigns/{cid}")["state"] == "running"
    finally:
        stack.api.post(f"/api/v1/campaigns/{cid}/stop")
