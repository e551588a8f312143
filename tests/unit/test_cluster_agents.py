"""One logical queue across nodes: the pure pause plan (ivr/cluster/pauses.py), the double-call check of AMI
logs (ivr/cluster/bridges.py), and the service's handling of AMI events and shared-state changes
(ivr/cluster/agents.py) with a fake AMI and an in-memory busy board."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from ivr.app.config import ConfigError
from ivr.app.config_load import from_mapping
from ivr.asterisk.state import CallCenterState
from ivr.cluster.agents import ClusterAgents
from ivr.cluster.bridges import agent_calls, double_calls
from ivr.cluster.pauses import MemberView, plan_pauses, reason_for
from ivr.store.cluster import BUSY, FREE, BusyEntry, BusyEvent, parse_event

# ------------------------------------------------------------------------------------------ the plan


def member(agent: str, queue: str = "support", paused: bool = False, reason: str = "") -> MemberView:
    return MemberView(queue, f"PJSIP/{agent}", agent, paused, reason)


def test_a_free_member_of_an_agent_busy_elsewhere_is_paused_with_the_node_in_the_reason() -> None:
    plan = plan_pauses({"1001": "a"}, [member("1001"), member("1001", "sales"), member("1002")], frozenset())
    assert [(a.queue, a.interface, a.paused, a.reason) for a in plan.actions] == [
        ("support", "PJSIP/1001", True, "busy@a"), ("sales", "PJSIP/1001", True, "busy@a")]
    assert plan.ours == {("support", "PJSIP/1001"), ("sales", "PJSIP/1001")}


def test_a_member_paused_by_a_supervisor_is_never_paused_over_nor_unpaused() -> None:
    members = [member("1001", paused=True, reason="lunch"), member("1002", paused=True, reason="")]
    busy = plan_pauses({"1001": "a", "1002": "a"}, members, frozenset())
    free = plan_pauses({}, members, frozenset())
    assert busy.actions == () and free.actions == () and busy.ours == free.ours == frozenset()


def test_a_held_member_is_unpaused_when_its_agent_is_free_again_or_busy_on_this_node() -> None:
    held = [member("1001", paused=True, reason="busy@a")]
    ours = frozenset({("support", "PJSIP/1001")})
    plan = plan_pauses({}, held, ours)
    assert [(a.interface, a.paused, a.reason) for a in plan.actions] == [("PJSIP/1001", False, "")]
    assert plan.ours == frozenset() and plan.released == frozenset()


def test_a_held_member_not_known_as_ours_is_adopted_after_a_restart() -> None:
    plan = plan_pauses({"1001": "a"}, [member("1001", paused=True, reason="busy@a")], frozenset())
    assert plan.actions == () and plan.adopted == plan.ours == {("support", "PJSIP/1001")}
    plan = plan_pauses({}, [member("1001", paused=True, reason="busy@a")], frozenset())
    assert [a.paused for a in plan.actions] == [False]


def test_a_held_member_whose_agent_moved_to_another_node_gets_that_node_in_its_reason() -> None:
    plan = plan_pauses({"1001": "c"}, [member("1001", paused=True, reason="busy@a")],
                       frozenset({("support", "PJSIP/1001")}))
    assert [(a.paused, a.reason) for a in plan.actions] == [(True, "busy@c")]


def test_ours_repaused_by_a_supervisor_is_released_without_an_action() -> None:
    plan = plan_pauses({"1001": "a"}, [member("1001", paused=True, reason="lunch")],
                       frozenset({("support", "PJSIP/1001")}))
    assert plan.actions == () and plan.ours == frozenset() and plan.released == {("support", "PJSIP/1001")}


def test_reason_for_names_the_node() -> None:
    assert reason_for("node-2") == "busy@node-2"


# --------------------------------------------------------------------------------- double calls


def connect(uid: str, agent: str, agent_uid: str = "") -> dict[str, str]:
    return {"Event": "AgentConnect", "Queue": "support", "Uniqueid": uid, "Interface": f"PJSIP/{agent}",
            "DestUniqueid": agent_uid or f"{uid}-a"}


def complete(uid: str, agent: str) -> dict[str, str]:
    return {"Event": "AgentComplete", "Queue": "support", "Uniqueid": uid, "Interface": f"PJSIP/{agent}"}


def hangup(uid: str) -> dict[str, str]:
    return {"Event": "Hangup", "Uniqueid": uid}


def test_no_double_call_when_one_agent_takes_calls_one_after_another_on_two_nodes() -> None:
    logs = {"a": [(1.0, connect("a1", "1001")), (5.0, complete("a1", "1001"))],
            "b": [(5.0, connect("b1", "1001")), (9.0, hangup("b1"))]}
    assert double_calls(logs) == []


def test_two_calls_of_one_agent_at_once_on_two_nodes_are_found() -> None:
    logs = {"a": [(1.0, connect("a1", "1001")), (5.0, complete("a1", "1001"))],
            "b": [(4.0, connect("b1", "1001")), (6.0, connect("b2", "1002")), (9.0, complete("b1", "1001"))]}
    (found,) = double_calls(logs)
    assert (found.agent, found.first.node, found.second.node) == ("1001", "a", "b")
    assert (found.first.start, found.first.end, found.second.start, found.second.end) == (1.0, 5.0, 4.0, 9.0)
    assert "agent 1001" in str(found)


def test_the_agents_channel_hanging_up_ends_the_call_and_a_call_never_ended_lasts_to_the_end() -> None:
    calls = agent_calls("a", [(1.0, connect("a1", "1001", "x1")), (3.0, hangup("x1")),
                              (4.0, connect("a2", "1001", "x2"))])
    assert [(c.uid, c.start, c.end) for c in calls] == [("a1", 1.0, 3.0), ("a2", 4.0, math.inf)]
    assert len(double_calls({"a": [(1.0, connect("a1", "1001"))], "b": [(100.0, connect("b1", "1001"))]})) == 1


def test_an_agent_id_mapping_can_be_given_for_other_interfaces() -> None:
    mobile = {"Event": "AgentConnect", "Uniqueid": "m1", "Interface": "Local/555@agent-mobile/n"}
    logs = {"a": [(1.0, mobile)], "b": [(2.0, connect("b1", "1001"))]}
    assert double_calls(logs) == []
    assert len(double_calls(logs, agent_of=lambda i: "1001")) == 1


# ---------------------------------------------------------------------------------- store parsing


def test_busy_entries_and_events_are_parsed_or_refused_with_the_value_named() -> None:
    e = BusyEntry.parse("node-a:1795612320.0:1000:2500")
    assert (e.node, e.uid, e.since, e.seen) == ("node-a", "1795612320.0", 1.0, 2.5)
    with pytest.raises(ValueError, match="'a:1:x:2'"):
        BusyEntry.parse("a:1:x:2")
    with pytest.raises(ValueError, match="busy entry"):
        BusyEntry.parse("a:1000:2000")
    ev = parse_event('{"kind": "free", "agent": "1001", "entry": "a:u1:1:2"}')
    assert (ev.kind, ev.agent, ev.entry.uid) == (FREE, "1001", "u1")
    with pytest.raises(ValueError, match="kind"):
        parse_event('{"kind": "gone", "agent": "1001", "entry": "a:u1:1:2"}')
    with pytest.raises(ValueError, match="not a busy/free message"):
        parse_event("garbage")


# ------------------------------------------------------------------------------------- the service


class FakeAmi:
    """Records QueuePause actions; ``echo`` feeds the QueueMemberPause Asterisk would send back."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: list[dict[str, Any]] = []
        self.echo: Callable[[dict[str, str]], None] | None = None
        self.fail = ""

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *,
                     timeout: float | None = None) -> Any:
        assert name == "QueuePause"
        f = dict(fields or {})
        if self.fail:
            raise RuntimeError(self.fail)
        self.sent.append(f)
        if self.echo is not None:
            self.echo({"Event": "QueueMemberPause", "Queue": f["Queue"], "Interface": f["Interface"],
                       "Paused": "1" if f["Paused"] == "true" else "0", "PausedReason": f.get("Reason", "")})
        return {"Response": "Success"}


class FakeBoard:
    """The busy board in memory (the scripts' rules without Redis)."""

    def __init__(self) -> None:
        self.entries: dict[str, BusyEntry] = {}
        self.log: list[tuple[str, str, str, str]] = []

    async def set_busy(self, agent: str, node: str, uid: str) -> tuple[BusyEntry | None, BusyEntry]:
        prev = self.entries.get(agent)
        self.entries[agent] = BusyEntry(node, uid, 1.0, 1.0, f"{node}:{uid}:1000:1000")
        self.log.append(("busy", agent, node, uid))
        return prev, self.entries[agent]

    async def set_free(self, agent: str, node: str, uid: str) -> bool:
        self.log.append(("free", agent, node, uid))
        cur = self.entries.get(agent)
        if cur is not None and (cur.node, cur.uid) == (node, uid):
            del self.entries[agent]
            return True
        return False

    async def confirm(self, node: str, calls: Mapping[str, str], max_call_ms: int) -> dict[str, BusyEntry]:
        return {}

    async def sweep(self, stale_ms: int, max_call_ms: int) -> dict[str, BusyEntry]:
        return {}

    async def all(self) -> dict[str, BusyEntry]:
        return dict(self.entries)

    async def listen(self, on_event: Callable[[BusyEvent], None],
                     on_subscribed: Callable[[], None] | None = None, poll: float = 1.0) -> None:
        await asyncio.Event().wait()


def node_with(agents: tuple[str, ...] = ("1001", "1002"), queues: tuple[str, ...] = ("support", "sales"),
              node: str = "b") -> tuple[ClusterAgents, FakeAmi, FakeBoard, CallCenterState]:
    state, ami, board = CallCenterState(), FakeAmi(), FakeBoard()
    for q in queues:
        for a in agents:
            state.apply({"Event": "QueueMemberAdded", "Queue": q, "Interface": f"PJSIP/{a}", "Paused": "0",
                         "PausedReason": "", "Status": "1", "InCall": "0"})
    svc = ClusterAgents(node, board, ami, state, lambda: ((a, (f"PJSIP/{a}",)) for a in agents))

    def echo(e: dict[str, str]) -> None:
        state.apply(e)
        svc.on_event(e)
    ami.echo = echo
    return svc, ami, board, state


def busy_event(agent: str, node: str, uid: str = "u1", kind: str = BUSY) -> BusyEvent:
    return BusyEvent(kind, agent, BusyEntry(node, uid, 1.0, 1.0, f"{node}:{uid}:1000:1000"))


def paused(state: CallCenterState, queue: str, agent: str) -> tuple[bool, str]:
    m = state.queues[queue].members[f"PJSIP/{agent}"]
    return m.paused, m.paused_reason


async def test_agent_connect_and_complete_on_this_node_write_busy_then_free() -> None:
    svc, _, board, _ = node_with(node="a")
    svc.on_event(connect("u1", "1001"))
    svc.on_event(connect("u9", "9999"))                  # not an agent of the roster
    assert svc.local["1001"].uid == "u1" and "9999" not in svc.local
    svc.on_event(complete("other", "1001"))              # another call's end: not this one
    svc.on_event(complete("u1", "1001"))
    while not svc._writes.empty():
        await svc._write(*svc._writes.get_nowait())
    assert board.log == [("busy", "1001", "a", "u1"), ("free", "1001", "a", "u1")] and board.entries == {}


async def test_a_hangup_of_the_agents_channel_ends_the_call() -> None:
    svc, _, board, _ = node_with(node="a")
    svc.on_event(connect("u1", "1001", agent_uid="x1"))
    svc.on_event(hangup("x1"))
    assert svc.local == {} and svc._writes.qsize() == 2


async def test_busy_elsewhere_pauses_here_and_free_unpauses_only_what_this_node_paused() -> None:
    svc, ami, _, state = node_with()
    state.apply({"Event": "QueueMemberPause", "Queue": "sales", "Interface": "PJSIP/1001", "Paused": "1",
                 "PausedReason": "lunch"})
    svc._on_busy_event(busy_event("1001", "a"))
    sent = await svc.apply()
    assert [(a.queue, a.reason) for a in sent] == [("support", "busy@a")]
    assert paused(state, "support", "1001") == (True, "busy@a") and paused(state, "sales", "1001") == (True, "lunch")
    assert svc.ours == {("support", "PJSIP/1001")} and svc.counters.pauses == 1
    assert await svc.apply() == []                       # nothing to do twice
    svc._on_busy_event(busy_event("1001", "a", kind=FREE))
    sent = await svc.apply()
    assert [(a.queue, a.paused) for a in sent] == [("support", False)]
    assert paused(state, "support", "1001") == (False, "") and paused(state, "sales", "1001") == (True, "lunch")
    assert svc.ours == frozenset()


async def test_own_node_events_and_a_stale_free_do_not_pause() -> None:
    svc, ami, _, _ = node_with(node="a")
    svc._on_busy_event(busy_event("1001", "a"))
    assert await svc.apply() == [] and svc.busy_elsewhere() == {}
    svc2, _, _, _ = node_with()
    svc2._on_busy_event(busy_event("1001", "a", "u2"))
    svc2._on_busy_event(busy_event("1001", "a", "u1", kind=FREE))   # the end of an older call: not this entry
    assert svc2.busy_elsewhere() == {"1001": "a"}
    confirmed = BusyEntry("a", "u2", 1.0, 7.0, "a:u2:1000:7000")   # the hash as a's reconcile left it
    svc2._on_busy_event(BusyEvent(FREE, "1001", confirmed))
    assert svc2.busy_elsewhere() == {}


async def test_a_supervisor_pause_landing_just_before_ours_is_put_back() -> None:
    svc, ami, _, state = node_with(agents=("1001",), queues=("support",))
    ami.echo = None                                       # the events come by hand, in Asterisk's order
    svc._on_busy_event(busy_event("1001", "a"))
    await svc.apply()
    for e in ({"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
               "PausedReason": "lunch"},
              {"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
               "PausedReason": "busy@a"}):
        state.apply(e)
        svc.on_event(e)
    assert svc.restore == {("support", "PJSIP/1001"): "lunch"} and svc.ours == frozenset()
    svc._on_busy_event(busy_event("1001", "a", kind=FREE))   # and the call ends before the pause is put back
    await svc.apply()                                         # the put-back's event is still on the way
    assert ami.sent[1:] == [{"Queue": "support", "Interface": "PJSIP/1001", "Paused": "true", "Reason": "lunch"}]
    assert svc.counters.restored == 1 and svc.ours == frozenset()
    await svc.apply()
    assert len(ami.sent) == 2                                 # no unpause: the state still shows busy@a
    e = {"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
         "PausedReason": "lunch"}
    state.apply(e)
    svc.on_event(e)
    assert svc.pending == {}
    await svc.apply()
    assert len(ami.sent) == 2 and paused(state, "support", "1001") == (True, "lunch")   # never undone


async def test_a_supervisor_pause_landing_after_ours_is_left_alone() -> None:
    svc, ami, _, state = node_with(agents=("1001",), queues=("support",))
    svc._on_busy_event(busy_event("1001", "a"))
    await svc.apply()
    e = {"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
         "PausedReason": "lunch"}
    state.apply(e)
    svc.on_event(e)
    svc._on_busy_event(busy_event("1001", "a", kind=FREE))
    await svc.apply()
    assert svc.restore == {} and paused(state, "support", "1001") == (True, "lunch") and len(ami.sent) == 1


async def test_nothing_is_sent_without_ami_and_a_failed_pause_is_counted() -> None:
    svc, ami, _, _ = node_with()
    svc._on_busy_event(busy_event("1001", "a"))
    ami.connected = False
    assert await svc.apply() == []
    ami.connected, ami.fail = True, "QueuePause failed: timeout"
    assert await svc.apply() == [] and svc.counters.errors == 2 and svc.ours == frozenset()
    ami.fail = "QueuePause failed: Interface not found"
    await svc.apply()
    assert svc.counters.errors == 2


async def test_resync_forgets_calls_that_ended_and_finds_calls_that_started_while_ami_was_away() -> None:
    svc, _, _, state = node_with(node="a")
    svc.on_event(connect("u1", "1001"))
    state.apply({"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1002", "InCall": "1",
                 "Status": "2"})
    state.channels = {"c9": {"channel": "PJSIP/trunk-00000009", "linkedid": "c9"},
                      "x9": {"channel": "PJSIP/1002-0000000a", "linkedid": "c9"}}
    svc.resync()
    assert set(svc.local) == {"1002"} and (svc.local["1002"].uid, svc.local["1002"].agent_uid) == ("c9", "x9")
    writes = [svc._writes.get_nowait() for _ in range(svc._writes.qsize())]
    assert writes == [("busy", "1001", "u1"), ("free", "1001", "u1"), ("busy", "1002", "c9")]


async def test_a_controller_restart_releases_members_it_held_before() -> None:
    svc, ami, _, state = node_with(agents=("1001",), queues=("support",))
    state.apply({"Event": "QueueMemberPause", "Queue": "support", "Interface": "PJSIP/1001", "Paused": "1",
                 "PausedReason": "busy@a"})
    await svc.reconcile()                                   # the board is empty: 1001 is free
    assert [(a.paused, a.queue) for a in await svc.apply()] == [(False, "support")]


def test_the_service_refuses_a_stale_bound_that_a_live_node_could_miss() -> None:
    with pytest.raises(ValueError, match="twice sync"):
        ClusterAgents("b", FakeBoard(), FakeAmi(), CallCenterState(), lambda: (), sync=5.0, stale=10.0)


def test_config_checks_the_busy_bounds() -> None:
    cfg = from_mapping({"cluster": {"enabled": True, "busy_sync": 1, "busy_stale": 5, "max_call": 3600}}, env={})
    assert (cfg.cluster.busy_sync, cfg.cluster.busy_stale, cfg.cluster.max_call) == (1.0, 5.0, 3600.0)
    with pytest.raises(ConfigError, match="cluster.busy_stale"):
        from_mapping({"cluster": {"busy_sync": 3, "busy_stale": 5}}, env={})
    with pytest.raises(ConfigError, match="cluster.max_call"):
        from_mapping({"cluster": {"max_call": 10}}, env={})


def test_a_member_held_for_a_call_elsewhere_is_busy_not_away() -> None:
    state = CallCenterState()
    for reason, held in (("busy@a", True), ("lunch", False)):
        state.apply({"Event": "QueueMemberAdded", "Queue": "q", "Interface": "PJSIP/1", "Paused": "1",
                     "PausedReason": reason})
        m = state.queues["q"].members["PJSIP/1"]
        assert (m.held_elsewhere, m.paused_here, m.available) == (held, not held, False)


async def test_the_controller_runs_the_service_only_in_a_cluster() -> None:
    from ivr.app.controller import Controller
    from ivr.store.redis_store import Store

    for enabled in (True, False):
        cfg = from_mapping({"node": "a", "cluster": {"enabled": enabled},
                            "agents": [{"id": "1001", "queues": ["support"]}]}, env={})
        store = Store.from_url("redis://127.0.0.1:1/0", "t")   # never reached: nothing is started
        try:
            c = Controller(cfg, store)
            assert (c.cluster_agents is not None) == enabled
            if c.cluster_agents is not None:
                assert c.cluster_agents.agent_of("PJSIP/1001") == "1001"
                c._on_ami_event({"Event": "QueueMemberAdded", "Queue": "support", "Interface": "PJSIP/1001",
                                 "Paused": "1", "PausedReason": "busy@b"})
                assert c.cluster_agents.members() == [MemberView("support", "PJSIP/1001", "1001", True, "busy@b")]
                assert c.cluster_agents.describe()["node"] == "a"
        finally:
            await store.close()
