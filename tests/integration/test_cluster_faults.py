"""Faults on the real cluster: ``ivr up --nodes 2`` (Kamailio, two nodes, the Redis set: primary, replica and
three Sentinels), SIPp callers through Kamailio, SIPp agent phones registered at Kamailio, SIPp customers'
phones behind the nodes' trunk. One cluster for the whole file; the tests run in this order:

* an agent never gets two calls at once: steady queue calls on both nodes to three agents; both nodes' AMI
  events are recorded and ``ivr.cluster.bridges.double_calls`` finds no overlap; the 486s Kamailio's busy
  guard gave (the race between two nodes ringing one free agent) are counted;
* the Redis primary SIGKILLed under a stream of calls: Sentinel promotes the replica, both controllers get
  back to ``/health`` ok by themselves, the calls failed in the gap stay within the stated bound, every
  record written before the kill (call records, callbacks, refund requests) is still there, and the old
  primary started again rejoins as a replica;
* the leading node's Asterisk SIGKILLed while callers wait in a queue without a free agent: its waiting
  callers become callbacks in their join order, the other node takes the lead, the callbacks are called
  back in that order through the trunk when an agent logs in, new calls succeed on the other node, and no
  callback or refund request made before is lost.

Run alone with the figures: ``pytest -s -n 0 -p no:cacheprovider tests/integration/test_cluster_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import time
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from ivr.app.config import PROJECT_ROOT
from ivr.cluster.bridges import agent_calls, double_calls
from ivr.devtools.cluster import Cluster
from ivr.devtools.cluster_parts import register_phone
from ivr.devtools.connect_latency import AmiTap
from ivr.devtools.redis_ha import DOWN_AFTER_MS
from ivr.devtools.sipp import Sipp, free_port
from ivr.devtools.sipp_scenarios import CallerScript
from ivr.store.redis_store import Store

from .harness import FIXTURES, SHORT_MENU_DID, Api, cluster_port_base, require_tools, wait_for
from .test_cluster import agi_calls, caller, ivr

SUPPORT_AGENTS = ("1001", "1002", "1003")
REBOOKING_AGENT = "1004"       # logged out at start: rebooking has no free agent until the test logs them in
# callers waiting in rebooking when a node dies: +1 202 numbers (the stack's outbound guard allows +1202), last
# digit 0-3 (the SIPp customers' phones answer and press 1)
WAITERS = ("12025550110", "12025550111", "12025550112", "12025550113", "12025550120", "12025550121")
TAP_EVENTS = frozenset({"AgentCalled", "AgentConnect", "AgentComplete", "Hangup"})

T = TypeVar("T")


class Faults:
    """The cluster of this file and what its tests share."""

    def __init__(self, c: Cluster, info: dict[str, Any], customer_port: int, sipp: Sipp) -> None:
        self.c, self.info, self.customer_port, self.sipp = c, info, customer_port, sipp
        self.apis = [Api(n["api"], info["token"]) for n in info["nodes"]]
        self.phones: list[Any] = []

    def store(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``fn`` with a store reaching the Redis set through its Sentinels, as the controllers do."""
        async def run() -> T:
            store = Store.from_config(self.c.node(0).config().redis)
            try:
                return await fn(store)
            finally:
                await store.close()
        return asyncio.run(run())

    def health(self, i: int) -> dict[str, Any]:
        status, body = self.apis[i].request("GET", "/health")
        return body if isinstance(body, dict) else {"status": f"http {status}"}


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    require_tools()
    workdir = tmp_path_factory.mktemp("faults")
    base = cluster_port_base()
    dialplans = workdir / "dialplans"
    dialplans.mkdir()
    shutil.copy(PROJECT_ROOT / "dialplans" / "main.yaml", dialplans / "main.yaml")
    shutil.copy(FIXTURES / "dialplans" / "short.yaml", dialplans / "short.yaml")
    customer_port = free_port()
    agents = [{"id": a, "name": f"Agent {a}", "queues": ["support"], "logged_in": True} for a in SUPPORT_AGENTS]
    agents.append({"id": REBOOKING_AGENT, "name": "Agent Rebooking", "queues": ["rebooking"], "logged_in": False})
    Cluster(workdir).init(nodes=2, port_base=base, extra={
        "dialplans_dir": str(dialplans), "dids": {SHORT_MENU_DID: "short"}, "agents": agents,
        "asterisk": {"trunk_uri": f"sip:127.0.0.1:{customer_port}", "outbound_callerid": "5550100"}})
    out = ivr("up", "--workdir", str(workdir), "--nodes", "2", "--port-base", str(base), "--timeout", "180",
              timeout=300)
    assert out.returncode == 0, f"ivr up --nodes 2 failed:\n{out.stderr[-4000:]}"
    info = json.loads(out.stdout.strip().splitlines()[-1])
    c = Cluster(workdir)
    f = Faults(c, info, customer_port, Sipp(target_port=c.kamailio().port, workdir=workdir / "sipp"))
    try:
        f.phones.append(f.sipp.start_callees(customer_port, talk_ms=20_000))
        yield f
    finally:
        for proc in f.phones:
            Sipp.stop(proc)
        down = ivr("down", "--workdir", str(workdir), timeout=300)
        assert down.returncode == 0, f"ivr down failed:\n{down.stdout[-2000:]}{down.stderr[-4000:]}"


def _kamailio_log(f: Faults) -> str:
    return (f.c.kamailio().root / "logs" / "kamailio.log").read_text(errors="replace")


def _start_phone(f: Faults, agent: str, talk_ms: int) -> int:
    kam = f.c.kamailio()
    port = free_port()
    register_phone(kam.host, kam.port, agent, port)
    f.phones.append(f.sipp.start_agent(port, talk_ms=talk_ms, trace_msg=True, via_proxy=True))
    return port


def test_an_agent_never_has_two_calls_at_once(faults: Faults) -> None:
    f = faults
    ports = {a: _start_phone(f, a, talk_ms=3000) for a in SUPPORT_AGENTS}
    taps = []
    for i in range(2):
        cfg = f.c.node(i).config().asterisk
        taps.append(AmiTap(cfg.ami_port, cfg.ami_username, cfg.ami_secret, events=TAP_EVENTS).start())
    assert not any(t.error for t in taps), [t.error for t in taps]
    log_before = len(_kamailio_log(f))
    calls, rate = 24, 1.0
    try:
        # callers press 1 for support and wait (an agent talks 3 s, then hangs up; Asterisk ends the caller's call)
        script = CallerScript(steps=[("pause", 1200), ("dtmf", "1")], end="wait_bye", wait_bye_ms=60_000,
                              patience_ms=45_000, via_proxy=True)
        result = f.sipp.call(script, extension=SHORT_MENU_DID, calls=calls, rate=rate, timeout_s=150)
        time.sleep(1.0)   # the last events
    finally:
        logs = {f"node{i + 1}": tap.stop() for i, tap in enumerate(taps)}
    assert not any(t.error for t in taps), [t.error for t in taps]
    per_node = {node: agent_calls(node, events) for node, events in logs.items()}
    per_agent = {a: sum(1 for calls_ in per_node.values() for x in calls_ if x.agent == a) for a in SUPPORT_AGENTS}
    log = _kamailio_log(f)[log_before:]
    busy = len(re.findall(r"agent 10\d\d is on a call: 486", log))          # refused by the busy guard
    rung = len(re.findall(r"call from node \S+ to agent 10\d\d", log))     # let through to the phone
    attempts = busy + rung
    invites = {a: f.sipp.invites_received(p, "agent").get(a, 0) for a, p in ports.items()}
    doubles = double_calls(logs)
    print(f"\nagents: {calls} callers at {rate}/s, queue calls per node "
          f"{ {n: len(x) for n, x in per_node.items()} }, per agent {per_agent}; INVITEs from the nodes to "
          f"agents {attempts}: {busy} answered 486 by the busy guard ({100 * busy / max(1, attempts):.1f} %), "
          f"{rung} let through; INVITEs at the phones {invites}; overlapping calls {len(doubles)}")
    assert not doubles, "\n".join(map(str, doubles))
    assert result.ok and result.successful == calls, f"{result.successful} ok, {result.failed} failed:\n{result.errors}"
    assert all(len(x) >= 3 for x in per_node.values()), f"queue calls per node: {per_node}"
    assert all(n >= 2 for n in per_agent.values()), f"queue calls per agent: {per_agent}"
    # every call an agent took is one INVITE at the phone: none was let through while the agent had a call
    assert sum(invites.values()) == sum(per_agent.values()) == rung, (invites, per_agent, rung)


def _records(store: Store) -> Awaitable[list[dict[str, Any]]]:
    return store.recent_calls(10_000)


def test_redis_primary_killed_under_call_load(faults: Faults) -> None:
    f = faults
    rs = f.c.redis()
    old, new = rs.ports["primary"], rs.ports["replica"]
    assert rs.primary() == old
    now = time.time()

    async def seed(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        refunds = [await store.refunds.create(str(40_000_000 + i), source="fault") for i in range(20)]
        cbs = [await store.callbacks.request(f"1202555{1000 + i}", queue="refunds", joined_at=now - 100 + i)
               for i in range(10)]   # nobody serves refunds: they stay pending
        return refunds, cbs
    refunds, cbs = f.store(seed)
    rate, calls, talk_ms = 2.0, 40, 1500
    proc = f.sipp.start_calls(caller(talk_ms), extension=f.info["inbound_extension"], calls=calls, rate=rate,
                              timeout_s=120)
    try:
        time.sleep(6)
        records_before = f.store(_records)
        killed, killed_wall = time.monotonic(), time.time()
        rs.kill("primary")
        # both controllers come back by themselves: /health ok and Redis answering
        back = []
        for i in range(2):
            wait_for(lambda i=i: (h := f.health(i)).get("status") == "ok" and h.get("redis") is True, timeout=60,
                     interval=0.2, what=f"node{i + 1}'s /health ok after the failover")
            back.append(time.monotonic() - killed)
        promoted = rs.primary()
        promoted_s = time.monotonic() - killed

        async def beats(store: Store) -> dict[str, float]:
            return {n: float(json.loads(v)["at"]) for n, v in (await store.cluster.nodes()).items()}
        # each controller writes its heartbeat to the new primary: reconnected, not just answering /health
        wait_for(lambda: all(b.get(n, 0) > killed_wall + 0.5 for b in [f.store(beats)] for n in ("node1", "node2")),
                 timeout=20, what="both nodes' heartbeats on the promoted primary")
    finally:
        result = f.sipp.finish(proc, timeout=200)
    assert promoted == new, f"Sentinel names {promoted}, not the replica {new}"
    # a call fails when it needs Redis while there is no primary: the calls that start or are in the IVR during
    # the gap (down-after + the vote and the promotion, about 2.5 s measured alone; 5 s allowed for load)
    bound = math.ceil(rate * (DOWN_AFTER_MS / 1000 + 4.0 + talk_ms / 1000))
    records = [f.health(i).get("records", {}) for i in range(2)]
    print(f"\nredis primary SIGKILL: promoted port {promoted} named {promoted_s:.2f} s after; /health ok again "
          f"after {back[0]:.2f} s (node1), {back[1]:.2f} s (node2); calls {result.successful} ok, "
          f"{result.failed} failed (bound {bound}); records before the kill {len(records_before)}; the "
          f"controllers' record writer (retries, write errors): {[(r.get('retries'), r.get('write_errors')) for r in records]}")
    assert result.failed <= bound, f"{result.failed} calls failed (bound {bound}):\n{result.errors}"
    assert result.successful + result.failed == calls

    async def check(store: Store) -> dict[str, list[str]]:
        after = {r["id"]: r for r in await store.recent_calls(10_000)}
        lost = {"calls": [r["id"] for r in records_before if after.get(r["id"]) != r],
                "refunds": [r["booking"] for r in refunds
                            if (await store.refunds.by_booking(r["booking"]) or {}).get("reference") != r["reference"]],
                "callbacks": [cb["id"] for cb in cbs if (await store.callbacks.get(cb["id"]) or {}).get("number")
                              != cb["number"]]}
        pending = set(await store.redis.zrange(store.keys.callbacks_pending, 0, -1))
        lost["callbacks_pending"] = [cb["id"] for cb in cbs if cb["id"] not in pending]
        return lost
    lost = f.store(check)
    assert lost == {"calls": [], "refunds": [], "callbacks": [], "callbacks_pending": []}, lost
    assert len(records_before) >= 8, f"only {len(records_before)} call records before the kill"
    # new calls go through on both nodes
    before = [agi_calls(n["api"], f.info["token"]) for n in f.info["nodes"]]
    more = f.sipp.call(caller(500), extension=f.info["inbound_extension"], calls=4, rate=4, timeout_s=60)
    assert more.ok and more.successful == 4, more.errors
    assert all(agi_calls(n["api"], f.info["token"]) > b for n, b in zip(f.info["nodes"], before))
    # the old primary, started again, follows the new one
    rs.restart("primary")
    st = rs.status()
    assert st["primary"]["role"] == "replica" and st["primary"]["link"] == "up" and st["current_primary"] == new, st
    status = f.c.status()
    assert status["redis"]["primary_part"] == "replica" and status["healthy"], json.dumps(status["redis"])


def _waiting_on(f: Faults, node: str) -> list[tuple[str, float, str]]:
    """(uid, place, number) of the callers in ``node``'s register, oldest first."""
    async def read(store: Store) -> list[tuple[str, float, str]]:
        waiting = await store.cluster.waiting(node)
        out = []
        for uid, place in waiting:
            raw = await store.redis.hget(store.keys.cluster_waiting_callers(node), uid)
            out.append((uid, place, json.loads(raw)["number"] if raw else ""))
        return out
    return f.store(read)


def test_a_dead_nodes_waiting_callers_are_called_back_in_join_order(faults: Faults) -> None:
    """The node killed is the one that leads: its controller lives on without Asterisk, so the other node must
    take the lead to dial the callbacks (the balancing loop and the callback dispatch act through AMI)."""
    f = faults
    c, info = f.c, f.info
    leader = c.leader()
    assert leader in ("node1", "node2"), f"nobody leads: {leader!r}"
    dead_i = int(leader[-1]) - 1
    alive_i = 1 - dead_i
    dead, alive = f"node{dead_i + 1}", f"node{alive_i + 1}"
    now = time.time()

    async def seed(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        refunds = [await store.refunds.create(str(41_000_000 + i), source="fault") for i in range(10)]
        cbs = [await store.callbacks.request(f"1202556{1000 + i}", queue="refunds", joined_at=now - 50 + i)
               for i in range(5)]
        return refunds, cbs
    refunds, cbs = f.store(seed)
    pending_before = f.store(lambda s: s.callbacks.pending(500))
    procs = []
    wait_s = 16
    for i, number in enumerate(WAITERS):   # one after the other: Kamailio alternates between the nodes
        script = CallerScript(steps=[("pause", 700), ("dtmf", "3"), ("pause", wait_s * 1000)], end="hangup",
                              via_proxy=True)
        procs.append(f.sipp.start_calls(script, extension=SHORT_MENU_DID, caller=number, calls=1, timeout_s=90))
        wait_for(lambda n=i + 1: sum(len(_waiting_on(f, f"node{k}")) for k in (1, 2)) >= n, timeout=20,
                 what=f"{i + 1} callers in the register")
        time.sleep(0.3)
    on_dead = _waiting_on(f, dead)
    assert len(on_dead) >= 2, f"callers on {dead}: {on_dead} ({alive}: {_waiting_on(f, alive)})"
    c.kill_node_asterisk(dead_i)
    killed = time.monotonic()
    try:
        # new calls during this succeed on the other node
        before1 = agi_calls(info["nodes"][alive_i]["api"], info["token"])
        more = f.sipp.call(caller(500), extension=info["inbound_extension"], calls=4, rate=2, timeout_s=60)
        assert more.ok and more.successful == 4, more.errors
        assert agi_calls(info["nodes"][alive_i]["api"], info["token"]) - before1 == 4
        made = wait_for(lambda: (p := [x for x in f.store(lambda s: s.callbacks.pending(500))
                                       if x.get("source") == "node_lost"]) and len(p) >= len(on_dead) and p,
                        timeout=40, what=f"callbacks of {dead}'s waiting callers")
        took = time.monotonic() - killed
        # node_ttl (5 s) after AMI was lost plus a sweep or two (the bound: node_ttl + 2 x heartbeat = 7 s),
        # with room for a loaded machine, as in test_cluster_asterisk_lost.py
        assert took <= 12.0, f"the callbacks came {took:.1f} s after the kill"
        # in the callback line in join order, each once, numbers and places as registered
        assert [(p["number"], round(float(p["place"]), 3)) for p in made] == \
            [(n, round(pl, 3)) for _, pl, n in on_dead], (made, on_dead)
        assert all(p["queue"] == "rebooking" and p["node"] == dead for p in made), made
        # nothing made before is lost
        pending_ids = {p["id"] for p in f.store(lambda s: s.callbacks.pending(500))}
        assert {p["id"] for p in pending_before} <= pending_ids
        assert {cb["id"] for cb in cbs} <= pending_ids

        async def refunds_there(store: Store) -> list[str]:
            return [r["booking"] for r in refunds
                    if (await store.refunds.by_booking(r["booking"]) or {}).get("reference") != r["reference"]]
        assert f.store(refunds_there) == []
        # the other node leads now (the dead node's controller gave the lease back)
        wait_for(lambda: c.leader() == alive, timeout=15, interval=0.2, what=f"{alive} to lead")
        lead_s = time.monotonic() - killed
        # its own waiters hang up; then an agent of rebooking logs in and the callbacks are dialled, in order
        wait_for(lambda: not _waiting_on(f, alive), timeout=wait_s + 20, what=f"{alive}'s callers gone")
        _start_phone(f, REBOOKING_AGENT, talk_ms=2000)
        f.apis[alive_i].post(f"/api/v1/agents/{REBOOKING_AGENT}/login")
        numbers = [p["number"] for p in made]
        order = wait_for(lambda: o if set(numbers) <= set(o := _invite_order(f)) else None, timeout=90,
                         interval=0.5, what=f"the callbacks dialled ({numbers})")
        done = wait_for(lambda: all((f.apis[alive_i].get(f"/api/v1/callbacks/{p['id']}")).get("status") == "done"
                                    for p in made), timeout=60, what="the callbacks answered")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait(10)
    dialled = [n for n in order if n in numbers]
    print(f"\n{dead} (the leader) SIGKILL with {len(on_dead)} callers waiting there: {len(made)} callbacks {took:.2f} s after, "
          f"dialled in the order {dialled} (join order {numbers}); {alive} led {lead_s:.2f} s after the kill")
    assert dialled == numbers, f"called back in the order {dialled}, joined in the order {numbers}"
    assert done and all(f.sipp.invites_received(f.customer_port).get(n) == 1 for n in numbers)
    c.restart_node_asterisk(dead_i)
    uri = f"sip:{info['nodes'][dead_i]['sip']}"
    wait_for(lambda: c.kamailio().destinations().get(uri, "").startswith("A"), timeout=30,
             what=f"Kamailio to mark {dead} active again")


def _invite_order(f: Faults) -> list[str]:
    """The numbers the customers' phones were called at, in the order their first INVITEs came."""
    log = f.sipp.workdir / f"callee-msg-{f.customer_port}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    out: list[str] = []
    for m in re.finditer(r"^INVITE sip:([0-9]+)@", text, re.M):
        if m.group(1) not in out:
            out.append(m.group(1))
    return out

