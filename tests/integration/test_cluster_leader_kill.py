"""The leader's controller SIGKILLed in the middle of a campaign, on a real cluster: Kamailio, two nodes (each
its own Asterisk and controller) and the cluster's Redis, started with ``Cluster``; the nodes' trunk ends at
SIPp callees, which count every INVITE per number.

What is asserted:

* another node leads within 5 s of the kill (measured: the lease's holder in Redis, and the new leader's own
  ``/health``);
* the campaign runs to ``done`` on the surviving node; every contact is dialled exactly once (one INVITE at the
  callees, one attempt recorded), none is dialled twice, none is skipped and none is left ``in_progress``;
* the contacts that were in flight on the killed controller (``in_progress`` with its node's name at the kill)
  are the only ones allowed an outcome other than the callee's keypress: their Originates had gone to its
  Asterisk, which stays up, so their calls went on there (each callee was rung once; an answer after the
  kill reached no controller, since the notice's FastAGI is the dead one, and the call hung up). Once the
  node has been silent for ``cluster.node_ttl`` the new leader's lost-node sweep settles each: with the
  callee's choice when the notice had recorded it before the kill, else as ``node_lost`` (closed, never
  dialled again). Claims
  the killed controller had read from the work stream and not handled yet are taken over by the other node's
  XAUTOCLAIM after the idle bound (``ivr.campaigns.work.IDLE_S``) and dialled there, once;
* the killed controller, started again, rejoins as a follower and dials nobody again.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any, Iterator

import pytest

from ivr.campaigns.dial_rules import NODE_LOST
from ivr.campaigns.work import IDLE_S, RECLAIM_EVERY_S
from ivr.devtools.cluster import Cluster
from ivr.devtools.sipp import Sipp, free_port
from ivr.store.redis_store import Store

from .harness import Api, cluster_port_base, require_tools, wait_for

CID = "leader-kill"
CONTACTS = 48
CPS = 2.0                     # 48 contacts at 2 calls/s: about 24 s of dialling
TAKEOVER_BOUND_S = 5.0        # the line's promise (lease_ttl 3 s + renew 1 s at most, by the defaults)
CALLER_ID = "5550100"


def numbers() -> list[str]:
    """Numbers whose SIPp callee answers and presses 1 (last digit 0-3): a refund request, a final outcome,
    so each contact needs exactly one call."""
    return [f"+1202555{4000 + (j // 4) * 10 + j % 4:04d}" for j in range(CONTACTS)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Sipp, int]]:
    require_tools()
    workdir = tmp_path_factory.mktemp("leaderkill")
    callee_port = free_port()
    c = Cluster(workdir / "cluster")
    c.init(nodes=2, port_base=cluster_port_base(), extra={
        "asterisk": {"trunk_uri": f"sip:127.0.0.1:{callee_port}", "outbound_callerid": CALLER_ID}})
    sipp = Sipp(target_port=int(c.sip().rsplit(":", 1)[1]), workdir=workdir / "sipp")
    callees = sipp.start_callees(callee_port, talk_ms=20_000)
    try:
        c.up(timeout=120)
        yield c, sipp, callee_port
    finally:
        try:
            c.down()
        finally:
            Sipp.stop(callees)


def health(api: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(api + "/health", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def post_csv(api: Api, cid: str, rows: list[str]) -> dict[str, Any]:
    body = ("number,name,booking\n" + "".join(f"{n},Contact {i},{810000 + i}\n" for i, n in enumerate(rows))).encode()
    req = urllib.request.Request(f"{api.base}/api/v1/campaigns/{cid}/contacts", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {api.token}", "Content-Type": "text/csv"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def records(c: Cluster) -> dict[str, Any]:
    """Every contact's record (number -> fields), the leases and the work stream's backlog, from the
    cluster's Redis (through the nodes' own Redis settings: one Redis or the Sentinels)."""
    async def read() -> dict[str, Any]:
        store = Store.from_config(c.node(0).config().redis)
        try:
            out: dict[str, dict[str, str]] = {}
            for n in range(1, CONTACTS + 1):
                rec = await store.campaigns.contact(CID, n)
                if rec:
                    out[rec["number"]] = rec
            return {"contacts": out, "leased": await store.campaigns.leased_count(CID),
                    "backlog": await store.campaign_work.backlog(CID)}
        finally:
            await store.close()
    return asyncio.run(read())


def test_the_leaders_controller_dies_mid_campaign(cluster: tuple[Cluster, Sipp, int]) -> None:
    c, sipp, callee_port = cluster
    info = c.describe()
    token = info["token"]
    apis = {n["name"]: Api(n["api"], token) for n in info["nodes"]}
    leader = wait_for(c.leader, timeout=10, what="a leader")
    follower = next(name for name in apis if name != leader)
    killed_i = int(leader.removeprefix("node")) - 1
    api = apis[follower]                       # the node that stays up answers the API throughout

    status, body = api.request("POST", "/api/v1/campaigns", {
        "id": CID, "name": CID, "message": {"en": "notice-cancelled"}, "amd": False,
        "window": {"start": "00:00", "end": "23:59"}, "max_attempts": 2, "ring_timeout": 6,
        # a second attempt would come 1 s after any outcome that is not final: a blind retry shows at once
        "retry": {"busy": 1, "no_answer": 1, "failed": 1, "no_key": 1, "machine": 1, "unknown": 1},
        "pacing": {"cps": CPS, "max_channels": 20, "max_transfers": 2}, "allowed_prefixes": ["+1"]})
    assert status == 201, body
    rows = numbers()
    assert post_csv(api, CID, rows)["imported"] == CONTACTS
    assert not sipp.invites_received(callee_port)
    api.post(f"/api/v1/campaigns/{CID}/start")
    started = time.monotonic()

    # mid-campaign: calls finishing on both nodes, about a third of the contacts dialled
    wait_for(lambda: api.get(f"/api/v1/campaigns/{CID}")["counts"].get("done", 0) >= 4, timeout=40,
             what="the campaign to be under way")
    at_kill = records(c)["contacts"]
    c.kill_node_controller(killed_i)
    killed = time.monotonic()
    in_flight_seen = {num for num, r in at_kill.items()
                      if r.get("status") == "in_progress" and r.get("node") == leader}

    new = wait_for(lambda: (lambda now: now if now and now != leader else None)(c.leader()), timeout=15,
                   interval=0.05, what="another node to lead")
    takeover_s = time.monotonic() - killed
    assert new == follower
    # the node itself says so (its answer from Redis may be read a moment after the lease was written)
    view = wait_for(lambda: (lambda v: v if v["leading"] else None)(health(apis[follower].base, token)["cluster"]),
                    timeout=2, interval=0.05, what=f"{follower}'s /health to say it leads")
    assert view["leader"] == follower and view["token"] > 1, view
    assert takeover_s < TAKEOVER_BOUND_S, f"another node led only {takeover_s:.2f} s after the kill"

    # the campaign completes on the surviving node: the sweep settles what the dead controller left in
    # progress (after node_ttl), XAUTOCLAIM hands over what it had read and not handled (after IDLE_S)
    done = wait_for(lambda: (d := api.get(f"/api/v1/campaigns/{CID}"))["state"] == "done" and d,
                    timeout=IDLE_S + RECLAIM_EVERY_S + 60, interval=0.5, what="the campaign to finish")
    finished_s = time.monotonic() - started
    after = records(c)
    contacts = after["contacts"]
    assert len(contacts) == CONTACTS
    assert after["leased"] == 0 and after["backlog"] == {"queued": 0, "pending": 0}, after
    assert not [num for num, r in contacts.items() if r["status"] == "in_progress"], "left in progress"

    time.sleep(2)   # an INVITE still on its way to the callees (none is expected) would show now
    invites = sipp.invites_received(callee_port)
    lost = {num for num, r in contacts.items() if r.get("last_outcome") == NODE_LOST}
    twice = {num: invites[num.lstrip("+")] for num in rows if invites.get(num.lstrip("+"), 0) > 1}
    missing = [num for num in rows if not invites.get(num.lstrip("+")) and num not in lost]
    # in flight at the kill and answered with the choice recorded before it: settled with that choice
    chosen = {num for num in in_flight_seen - lost if contacts[num].get("key_attempt") == contacts[num]["attempt_id"]}
    print(f"\nleader {leader} killed {killed - started:.1f} s into the campaign; {follower} led "
          f"{takeover_s:.2f} s later; campaign done {finished_s:.1f} s after its start; in progress on the killed "
          f"controller at the kill: {len(in_flight_seen)} (settled: {len(lost)} node_lost, {len(chosen)} with the "
          f"callee's recorded choice, {len(in_flight_seen) - len(lost) - len(chosen)} ended before the kill); "
          f"dialled twice: {len(twice)}; INVITEs {sum(invites.values())} for {CONTACTS} contacts")
    assert not twice, f"dialled twice: {twice}"
    assert not missing, f"never dialled: {missing}"
    assert not set(invites) - {num.lstrip("+") for num in rows}, invites
    # node_lost only for what the killed controller had in progress: rung once (its Asterisk went on), closed
    assert lost <= in_flight_seen, {num: contacts[num] for num in lost - in_flight_seen}
    for num, r in contacts.items():
        if num in lost:
            assert (r["status"], r["node"], r["attempts"]) == ("failed", leader, "1"), r
            assert invites.get(num.lstrip("+"), 0) <= 1, (num, r)
        else:
            assert (r["status"], r["last_outcome"], r["attempts"]) == ("done", "refund", "1"), r
            assert invites[num.lstrip("+")] == 1, (num, r)
    assert done["counts"].get("done", 0) == CONTACTS - len(lost)
    assert done["counts"].get("failed", 0) == len(lost) and not done["counts"].get("in_progress")

    # the killed controller starts again: a follower under the new leader; it dials nobody again
    c.restart_node_controller(killed_i)
    back = wait_for(lambda: (lambda h: h if h["cluster"]["leader"] == follower else None)(
        health(apis[leader].base, token)), timeout=15, what=f"{leader} to see {follower} lead")
    assert back["cluster"]["node"] == leader and not back["cluster"]["leading"], back["cluster"]
    assert back["dialer"]["recovered"], back["dialer"]
    assert c.leader() == follower
    time.sleep(3)
    assert sipp.invites_received(callee_port) == invites
    assert records(c)["contacts"] == contacts
